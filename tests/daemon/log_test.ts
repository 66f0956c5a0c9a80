/**
 * The daemon's log: CRIU's levels, prefixes and timestamps; where lines go
 * (a file created 0600 and appended to, "-" for stdout, stderr by default).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { LEVEL, Logger, now } from "../../src/daemon/log.ts";
import { withTemp } from "./_helpers.ts";

/** Logs one line at every level through a fresh logger on `file`. */
function logAll(file: string, level: number): string[] {
  const log = new Logger({ file, level });
  log.msg("m");
  log.error("e");
  log.warn("w");
  log.info("i");
  log.debug("d");
  return Deno.readTextFileSync(file).split("\n").filter(Boolean);
}

/** A `(SS.UUUUUU) ` timestamp, as CRIU prints from level 3 on. */
const STAMP = /^\((\d{2,}\.\d{6})\) /;

Deno.test("log: the levels are CRIU's", () => {
  assert.deepEqual(LEVEL, { msg: 0, error: 1, warn: 2, info: 3, debug: 4 });
});

Deno.test("log: each level adds its lines, with CRIU's prefixes", async () => {
  await withTemp("log", (tmp) => {
    const lines = (level: number) =>
      logAll(join(tmp, `level-${level}.log`), level);
    assert.deepEqual(lines(0), ["m"]);
    assert.deepEqual(lines(1), ["m", "Error (lazyd): e"]);
    // 2 is CRIU's default: errors and warnings, no timestamps.
    assert.deepEqual(lines(2), ["m", "Error (lazyd): e", "Warn  (lazyd): w"]);
    const strip = (l: string) => l.replace(STAMP, "");
    assert.deepEqual(lines(3).map(strip), [
      "m",
      "Error (lazyd): e",
      "Warn  (lazyd): w",
      "i",
    ]);
    assert.deepEqual(lines(4).map(strip), [
      "m",
      "Error (lazyd): e",
      "Warn  (lazyd): w",
      "i",
      "d",
    ]);
  });
});

Deno.test("log: timestamps from level 3 on, on every line", async () => {
  await withTemp("log", (tmp) => {
    for (const level of [0, 1, 2]) {
      for (const l of logAll(join(tmp, `${level}.log`), level)) {
        assert.doesNotMatch(l, /^\(/, `level ${level}: ${l}`);
      }
    }
    for (const level of [3, 4]) {
      const lines = logAll(join(tmp, `${level}.log`), level);
      assert.equal(lines.length, level === 3 ? 4 : 5);
      for (const l of lines) assert.match(l, STAMP, `level ${level}: ${l}`);
    }
  });
});

Deno.test("log: timestamps count seconds from the shared origin", async () => {
  await withTemp("log", (tmp) => {
    const file = join(tmp, "t.log");
    // An origin 12.5 s ago: the stamp is at least that, and has the
    // zero-padded two-digit form "(12.5xxxxx)". No upper bound beyond a
    // generous one: the machine may be busy.
    const log = new Logger({ file, level: 3, origin: now() - 12_500 });
    assert.equal(log.origin <= now() - 12_500, true);
    log.info("x");
    const [line] = Deno.readTextFileSync(file).split("\n");
    const m = line.match(STAMP);
    assert.ok(m, line);
    const t = Number(m[1]);
    assert.ok(t >= 12.5 && t < 600, line);
    assert.ok(line.endsWith(") x"), line);

    // Without an origin, the clock starts at construction; seconds below
    // 10 are padded to two digits.
    const fresh = join(tmp, "fresh.log");
    new Logger({ file: fresh, level: 4 }).debug("y");
    assert.match(Deno.readTextFileSync(fresh), /^\(0\d\.\d{6}\) y\n$/);
  });
});

Deno.test("log: debugOn is true exactly at level 4", () => {
  for (const level of [0, 1, 2, 3, 4]) {
    // stderr logger; nothing is written here.
    assert.equal(new Logger({ level }).debugOn, level >= 4);
  }
});

Deno.test("log: a new file is created 0600, an existing one appended to", async () => {
  await withTemp("log", (tmp) => {
    const file = join(tmp, "new.log");
    new Logger({ file, level: 2 }).error("first");
    assert.equal(Deno.statSync(file).mode! & 0o777, 0o600);
    // A second logger on the same file (the daemon's main thread and its
    // worker each have one) appends after what is there.
    const again = new Logger({ file, level: 2 });
    again.warn("second");
    new Logger({ file, level: 2 }).msg("third");
    again.error("fourth");
    assert.equal(
      Deno.readTextFileSync(file),
      "Error (lazyd): first\nWarn  (lazyd): second\nthird\nError (lazyd): fourth\n",
    );

    const old = join(tmp, "old.log");
    Deno.writeTextFileSync(old, "from before\n");
    new Logger({ file: old, level: 0 }).msg("appended");
    assert.equal(Deno.readTextFileSync(old), "from before\nappended\n");
  });
});

Deno.test("log: a long line is written whole", async () => {
  await withTemp("log", (tmp) => {
    const file = join(tmp, "long.log");
    const text = "x".repeat(200_000);
    new Logger({ file, level: 2 }).warn(text);
    assert.equal(Deno.readTextFileSync(file), `Warn  (lazyd): ${text}\n`);
  });
});

Deno.test("log: a log that cannot be written never throws", () => {
  // /dev/full fails every write with ENOSPC.
  const log = new Logger({ file: "/dev/full", level: 4 });
  log.msg("lost");
  log.error("lost");
  log.debug("lost");
});

Deno.test("log: '-' writes to stdout, no file to stderr", async () => {
  const url = new URL("../../src/daemon/log.ts", import.meta.url).href;
  const code = `
    import { Logger } from ${JSON.stringify(url)};
    new Logger({ file: "-", level: 2 }).error("to stdout");
    new Logger({ level: 2 }).warn("to stderr");
    new Logger({ file: "-", level: 1 }).warn("dropped");
  `;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=ts", code],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const dec = new TextDecoder();
  assert.equal(out.code, 0, dec.decode(out.stderr));
  assert.equal(dec.decode(out.stdout), "Error (lazyd): to stdout\n");
  assert.equal(dec.decode(out.stderr), "Warn  (lazyd): to stderr\n");
});
