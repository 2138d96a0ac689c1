"""The REST backend of simbackend."""
