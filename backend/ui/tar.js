// A folder chosen in the browser as a .tar.gz: a minimal POSIX ustar writer (regular
// files only, which is all an experiment holds) and the browser's own gzip.

const BLOCK = 512;
const encoder = new TextEncoder();

/**
 * The .tar.gz (a Blob) of `entries`: [{path: "main.py", file: Blob}], paths relative to
 * the experiment's folder with "/" between folders.
 * Throws Error when a path cannot be stored in a ustar header.
 */
export async function tarGzip(entries) {
  const parts = [];
  const mtime = Math.floor(Date.now() / 1000);
  for (const {path, file} of entries) {
    parts.push(header(path, file.size, mtime), file);
    const padding = (BLOCK - (file.size % BLOCK)) % BLOCK;
    if (padding) parts.push(new Uint8Array(padding));
  }
  parts.push(new Uint8Array(2 * BLOCK)); // the end of the archive
  const gzipped = new Blob(parts).stream().pipeThrough(new CompressionStream("gzip"));
  return new Response(gzipped).blob();
}

/** The files of an <input webkitdirectory>, without the chosen folder's own name. */
export function folderEntries(fileList) {
  const files = Array.from(fileList);
  return files.map((file) => {
    const parts = (file.webkitRelativePath || file.name).split("/");
    return {path: parts.length > 1 ? parts.slice(1).join("/") : parts[0], file};
  }).filter(({path}) => !path.split("/").some((part) => part === "__pycache__"
                                                     || part.startsWith(".")));
}

function header(path, size, mtime) {
  const block = new Uint8Array(BLOCK);
  const [prefix, name] = splitPath(path);
  put(block, 0, 100, name);
  putOctal(block, 100, 8, 0o644);             // mode
  putOctal(block, 108, 8, 0);                 // uid
  putOctal(block, 116, 8, 0);                 // gid
  putOctal(block, 124, 12, size);
  putOctal(block, 136, 12, mtime);
  block.fill(0x20, 148, 156);                 // checksum counts as spaces while summing
  block[156] = 0x30;                          // typeflag '0': a regular file
  put(block, 257, 6, "ustar\0");
  put(block, 263, 2, "00");
  put(block, 345, 155, prefix);
  const sum = block.reduce((total, byte) => total + byte, 0);
  putOctal(block, 148, 7, sum);               // six digits, NUL, then the space kept
  return block;
}

/** ustar keeps names up to 100 bytes, plus a prefix of up to 155 split at a "/". */
function splitPath(path) {
  const bytes = encoder.encode(path).length;
  if (bytes <= 100) return ["", path];
  for (let cut = path.indexOf("/"); cut > 0; cut = path.indexOf("/", cut + 1)) {
    const prefix = path.slice(0, cut);
    const name = path.slice(cut + 1);
    if (encoder.encode(prefix).length <= 155 && encoder.encode(name).length <= 100) {
      return [prefix, name];
    }
  }
  throw new Error(`The path "${path}" is too long for a tar archive.`);
}

function put(block, offset, length, text) {
  const data = encoder.encode(text);
  if (data.length > length) throw new Error(`"${text}" does not fit in a tar header.`);
  block.set(data, offset);
}

/** A number as zero-padded octal digits and a NUL, filling `length` bytes. */
function putOctal(block, offset, length, value) {
  const digits = value.toString(8).padStart(length - 1, "0");
  if (digits.length > length - 1) throw new Error("A file is too large for a tar archive.");
  put(block, offset, length, `${digits}\0`);
}
