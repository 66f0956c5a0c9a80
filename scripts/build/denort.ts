/**
 * Finding and validating Deno's `denort` runtime for `deno compile`.
 *
 * `deno compile` copies denort (the runtime without the CLI: no language
 * server, formatter, linter, bundler, ...) and appends the program. Deno
 * takes it from `DENORT_BIN`, from
 * `$DENO_DIR/dl/release/v<version>/denort-x86_64-unknown-linux-gnu.zip`, or
 * downloads that zip. Deno itself does not check a supplied runtime: given
 * the full `deno` it produces an executable that behaves as the deno CLI.
 * So the build checks it first:
 *
 * - an x86_64 ELF file;
 * - not the full `deno`: the full CLI contains its language server and
 *   subcommands, which leave log targets and source paths such as
 *   `deno::lsp`, `deno::tools` and `cli/tools/` in the binary; denort is
 *   built from a separate crate (`denort`) and contains none of them;
 * - the same version: Deno's user agent `Deno/<version>` is in both the CLI
 *   and denort (it comes from the shared deno_lib crate).
 *
 * A zip must hold exactly one entry, `denort`.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { join } from "node:path";
import { exists } from "../_util.ts";

/** A supplied runtime that cannot be used; the message says why. */
export class DenortError extends Error {
  override name = "DenortError";
}

/** The release asset name of denort for this platform. */
export const DENORT_ZIP = "denort-x86_64-unknown-linux-gnu.zip";

/** Strings only the full deno CLI contains (see the module doc). */
const FULL_DENO_MARKERS = ["deno::lsp", "deno::tools", "cli/tools/"];

/** Deno's cache directory, resolved the way Deno resolves it on Linux. */
export function denoDir(
  env: (name: string) => string | undefined,
): string | undefined {
  const dir = env("DENO_DIR");
  if (dir) return dir;
  const xdg = env("XDG_CACHE_HOME");
  if (xdg) return join(xdg, "deno");
  const home = env("HOME");
  return home ? join(home, ".cache", "deno") : undefined;
}

/** Where `deno compile` looks for (and downloads) the denort zip. */
export function denortZipPath(
  version: string,
  env: (name: string) => string | undefined,
): string | undefined {
  const dir = denoDir(env);
  return dir
    ? join(dir, "dl", "release", `v${version}`, DENORT_ZIP)
    : undefined;
}

/**
 * Checks that `bytes` (read from `what`) are denort of `version`; throws a
 * {@linkcode DenortError} saying what is wrong otherwise.
 */
export function validateDenort(
  bytes: Uint8Array,
  version: string,
  what: string,
): void {
  const isElf = bytes.length > 64 && bytes[0] === 0x7f && bytes[1] === 0x45 &&
    bytes[2] === 0x4c && bytes[3] === 0x46;
  if (!isElf) {
    throw new DenortError(`${what} is not an ELF executable, so not denort`);
  }
  // EI_CLASS 2 = 64-bit, EI_DATA 1 = little-endian, e_machine 62 = x86-64.
  if (bytes[4] !== 2 || bytes[5] !== 1 || (bytes[18] | bytes[19] << 8) !== 62) {
    throw new DenortError(`${what} is an ELF file, but not for x86_64 Linux`);
  }
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const marker = FULL_DENO_MARKERS.find((m) => buf.includes(m));
  if (marker !== undefined) {
    throw new DenortError(
      `${what} is the full deno CLI, not the denort runtime (it contains ` +
        `"${marker}"); supply ${DENORT_ZIP} of Deno ${version} or the ` +
        `denort file inside it`,
    );
  }
  const found = userAgentVersions(buf);
  if (!found.includes(version)) {
    throw new DenortError(
      `${what} is denort ${
        found.length ? found.join(", ") : "of an unknown version"
      }, ` +
        `but this build needs Deno ${version}`,
    );
  }
}

/** The versions in `Deno/x.y.z` user-agent strings of a binary. */
function userAgentVersions(buf: Buffer): string[] {
  const out = new Set<string>();
  for (let i = buf.indexOf("Deno/"); i >= 0; i = buf.indexOf("Deno/", i + 5)) {
    const m = /^Deno\/(\d+\.\d+\.\d+)(?![\d.])/.exec(
      buf.subarray(i, i + 32).toString("latin1"),
    );
    if (m) out.add(m[1]);
  }
  return [...out];
}

/** The one file of a zip archive. */
export interface ZipEntry {
  /** Its name in the archive. */
  name: string;
  /** Its content, CRC-checked. */
  data: Uint8Array;
}

/**
 * Reads the single entry of a small (non-zip64) zip archive, stored or
 * deflated; throws a {@linkcode DenortError} for anything else.
 */
export async function readSingleEntryZip(
  zip: Uint8Array,
  what: string,
): Promise<ZipEntry> {
  const bad = (why: string) => new DenortError(`${what}: ${why}`);
  const dv = new DataView(zip.buffer, zip.byteOffset, zip.byteLength);
  // The end-of-central-directory record: last 22 bytes plus a comment.
  let eocd = -1;
  for (
    let i = zip.length - 22;
    i >= Math.max(0, zip.length - 22 - 65535);
    i--
  ) {
    if (dv.getUint32(i, true) === 0x06054b50) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw bad("not a zip archive");
  const count = dv.getUint16(eocd + 10, true);
  if (count !== 1) throw bad(`holds ${count} entries, expected only "denort"`);
  const cd = dv.getUint32(eocd + 16, true);
  if (cd + 46 > zip.length || dv.getUint32(cd, true) !== 0x02014b50) {
    throw bad("damaged central directory");
  }
  const method = dv.getUint16(cd + 10, true);
  const crc = dv.getUint32(cd + 16, true);
  const csize = dv.getUint32(cd + 20, true);
  const usize = dv.getUint32(cd + 24, true);
  const nlen = dv.getUint16(cd + 28, true);
  const local = dv.getUint32(cd + 42, true);
  const name = new TextDecoder().decode(zip.subarray(cd + 46, cd + 46 + nlen));
  if (csize === 0xffffffff || usize === 0xffffffff) {
    throw bad("zip64 is not supported");
  }
  if (local + 30 > zip.length || dv.getUint32(local, true) !== 0x04034b50) {
    throw bad("damaged local header");
  }
  const start = local + 30 + dv.getUint16(local + 26, true) +
    dv.getUint16(local + 28, true);
  if (start + csize > zip.length) throw bad("truncated");
  const raw = zip.subarray(start, start + csize);
  let data: Uint8Array;
  if (method === 0) {
    data = raw;
  } else if (method === 8) {
    const stream = new Blob([raw as Uint8Array<ArrayBuffer>]).stream()
      .pipeThrough(
        new DecompressionStream("deflate-raw"),
      );
    data = new Uint8Array(await new Response(stream).arrayBuffer());
  } else {
    throw bad(`unsupported compression method ${method}`);
  }
  if (data.length !== usize || crc32(data) !== crc) {
    throw bad(`entry "${name}" is corrupt`);
  }
  return { name, data };
}

let crcTable: Uint32Array | undefined;

/** CRC-32 (IEEE), as zip uses it. */
export function crc32(data: Uint8Array): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) {
    c = crcTable[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  }
  return (c ^ 0xffffffff) >>> 0;
}

/** A validated denort, ready to be passed to `deno compile` as DENORT_BIN. */
export interface Denort {
  /** The denort executable (extracted from a zip if it came in one). */
  path: string;
  /** Where it came from, for the build's report. */
  source: string;
  /** Its content. */
  bytes: Uint8Array;
}

/** Options of {@linkcode findDenort}. */
export interface FindDenortOptions {
  /** Reads an environment variable (defaults to Deno.env.get). */
  env?: (name: string) => string | undefined;
  /** Where a zip's denort is extracted to. */
  extractDir: string;
}

/**
 * A supplied denort of `version`: `DENORT_BIN`, else the zip in Deno's
 * cache. Undefined when neither is there (`deno compile` would then try to
 * download it). A supplied one that is wrong throws {@linkcode DenortError}.
 */
export async function findDenort(
  version: string,
  options: FindDenortOptions,
): Promise<Denort | undefined> {
  const env = options.env ?? ((n: string) => Deno.env.get(n));
  const bin = env("DENORT_BIN");
  if (bin) {
    const bytes = await readOrThrow(bin, "DENORT_BIN");
    validateDenort(bytes, version, `DENORT_BIN=${bin}`);
    return { path: bin, source: `DENORT_BIN=${bin}`, bytes };
  }
  const zip = denortZipPath(version, env);
  if (!zip || !exists(zip)) return undefined;
  const entry = await readSingleEntryZip(
    await readOrThrow(zip, "denort zip"),
    zip,
  );
  if (entry.name !== "denort") {
    throw new DenortError(`${zip}: holds "${entry.name}", expected "denort"`);
  }
  validateDenort(entry.data, version, `denort in ${zip}`);
  Deno.mkdirSync(options.extractDir, { recursive: true });
  const path = join(options.extractDir, `denort-${version}`);
  const tmp = `${path}.${Deno.pid}.tmp`;
  Deno.writeFileSync(tmp, entry.data, { mode: 0o755 });
  Deno.renameSync(tmp, path);
  return { path, source: zip, bytes: entry.data };
}

async function readOrThrow(path: string, what: string): Promise<Uint8Array> {
  try {
    return await Deno.readFile(path);
  } catch (e) {
    throw new DenortError(
      `${what} ${path} cannot be read: ${(e as Error).message}`,
    );
  }
}
