/**
 * Types shared by the lazy-range bookkeeping.
 *
 * @module
 */

/** Size of a page on x86_64, in bytes. */
export const PAGE_SIZE = 4096;

/**
 * A run of pages a process still needs.
 *
 * Range objects are never modified by this layer (functions build new ones),
 * so lists returned by the pure functions may share them with their input.
 */
export interface LazyRange {
  /** First byte, as a current address in the restored process (moves on mremap). */
  readonly start: number;
  /** One past the last byte, as a current address. */
  readonly end: number;
  /**
   * Dump-time address of `start`. Never changes; data is looked up in the
   * images and requested from the page server by this address.
   */
  readonly image: number;
}

/** A half-open address interval `[start, end)`. */
export interface Interval {
  /** First byte. */
  readonly start: number;
  /** One past the last byte. */
  readonly end: number;
}
