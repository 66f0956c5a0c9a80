/**
 * The daemon's log, in the shape CRIU's own log has so that tools which
 * scan `criu lazy-pages` logs (zdtm looks for "Error" and "Warn") keep
 * working: levels 0–4, `-v` default 2, a `(SS.UUUUUU) ` timestamp from
 * level 3 on, `Error (lazyd): ` and `Warn  (lazyd): ` prefixes.
 *
 * Lines are written synchronously with one `write` each on an O_APPEND
 * descriptor, so the main thread and the uffd worker can share one file
 * without interleaving inside a line, and nothing is lost at exit.
 *
 * @module
 */

/** Log levels, as CRIU numbers them. */
export const LEVEL = { msg: 0, error: 1, warn: 2, info: 3, debug: 4 } as const;

/** Where and how much to log. */
export interface LogOptions {
  /** File path (relative to the cwd), "-" for stdout, undefined for stderr. */
  file?: string;
  /** 0..4; CRIU's default is 2. */
  level: number;
  /** Clock origin shared by all threads (performance.timeOrigin based). */
  origin?: number;
}

const encoder = new TextEncoder();

/** A leveled, line-atomic logger. */
export class Logger {
  readonly level: number;
  readonly origin: number;
  #out: { writeSync(p: Uint8Array): number };

  constructor(options: LogOptions) {
    this.level = options.level;
    this.origin = options.origin ?? now();
    if (options.file === undefined) this.#out = Deno.stderr;
    else if (options.file === "-") this.#out = Deno.stdout;
    else {
      this.#out = Deno.openSync(options.file, {
        append: true,
        create: true,
        mode: 0o600,
      });
    }
  }

  /** Logs unconditionally (level 0), like CRIU's pr_msg. */
  msg(text: string): void {
    this.#write(LEVEL.msg, "", text);
  }

  /** Logs an error (level 1). */
  error(text: string): void {
    this.#write(LEVEL.error, "Error (lazyd): ", text);
  }

  /** Logs a warning (level 2). */
  warn(text: string): void {
    this.#write(LEVEL.warn, "Warn  (lazyd): ", text);
  }

  /** Logs information (level 3). */
  info(text: string): void {
    this.#write(LEVEL.info, "", text);
  }

  /** Logs debugging detail (level 4); check {@linkcode Logger.debugOn} first on hot paths. */
  debug(text: string): void {
    this.#write(LEVEL.debug, "", text);
  }

  /** Whether debug lines are written, to skip building them on hot paths. */
  get debugOn(): boolean {
    return this.level >= LEVEL.debug;
  }

  #write(level: number, prefix: string, text: string): void {
    if (level > this.level) return;
    let line = prefix + text + "\n";
    if (this.level >= LEVEL.info) {
      const t = (now() - this.origin) / 1000;
      line = `(${t.toFixed(6).padStart(9, "0")}) ` + line;
    }
    const bytes = encoder.encode(line);
    try {
      let off = 0;
      while (off < bytes.length) {
        off += this.#out.writeSync(bytes.subarray(off));
      }
    } catch {
      // A log that cannot be written (full disk, closed stdout) must not
      // take the page service down with it.
    }
  }
}

/** Milliseconds on a clock that the main thread and workers share. */
export function now(): number {
  return performance.timeOrigin + performance.now();
}
