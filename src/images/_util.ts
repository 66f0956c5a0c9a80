// Internal helpers shared by the image parsers: number conversion and file
// system access, both turning every failure into an ImageError.
import { ImageError, type ImageErrorSite } from "./errors.ts";

/** Formats a number or bigint as hex for messages. */
export function hex(n: number | bigint): string {
  return n < 0 ? "-0x" + (-n).toString(16) : "0x" + n.toString(16);
}

/**
 * Converts a decoded uint64 to a number. Values from 2^53 on cannot be
 * represented exactly, and rounding an address would silently serve the
 * wrong page, so they are an error rather than truncated.
 */
export function safeNumber(
  value: bigint,
  where: ImageErrorSite & { what: string },
): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n)) {
    throw new ImageError(
      where,
      `${where.what} ${hex(value)} is not below 2^53`,
    );
  }
  return n;
}

/** Describes a caught exception for a reason string. */
export function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * `Deno.statSync` that maps every failure to an ImageError; with
 * `missingOk`, a file that does not exist yields undefined instead.
 */
export function statFile(
  path: string,
  options?: { missingOk?: false },
): Deno.FileInfo;
export function statFile(
  path: string,
  options: { missingOk: true },
): Deno.FileInfo | undefined;
export function statFile(
  path: string,
  options: { missingOk?: boolean } = {},
): Deno.FileInfo | undefined {
  try {
    return Deno.statSync(path);
  } catch (err) {
    if (options.missingOk && err instanceof Deno.errors.NotFound) {
      return undefined;
    }
    throw new ImageError(
      { file: path, offset: 0 },
      `cannot stat: ${describe(err)}`,
      {
        cause: err,
      },
    );
  }
}
