/**
 * The one error type of the image layer.
 *
 * @module
 */

/** Where in which file an {@linkcode ImageError} was found. */
export interface ImageErrorSite {
  /** Path of the file (or directory) that is wrong. */
  file: string;
  /** Byte offset in that file; 0 when the problem is the file as a whole. */
  offset: number;
}

/**
 * Any failure while reading an image directory: a missing or unreadable
 * file, bad framing, an undecodable record, a value outside the safe integer
 * range, inconsistent entries. Callers catch exactly this type; every other
 * exception coming out of `src/images/` is a bug (or a bad argument).
 */
export class ImageError extends Error {
  /** Path of the offending file. */
  readonly file: string;
  /** Byte offset of the problem in {@linkcode ImageError.file}. */
  readonly offset: number;
  /** What is wrong, without the file name and offset. */
  readonly reason: string;

  /**
   * Builds `${file}: byte ${offset}: ${reason}`; `options.cause` keeps the
   * underlying exception (file system or protobuf error).
   */
  constructor(site: ImageErrorSite, reason: string, options?: ErrorOptions) {
    super(`${site.file}: byte ${site.offset}: ${reason}`, options);
    this.name = "ImageError";
    this.file = site.file;
    this.offset = site.offset;
    this.reason = reason;
  }
}
