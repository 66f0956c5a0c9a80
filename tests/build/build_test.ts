/**
 * dist/lazyd as users get it: one copied file, run with `env -i` from
 * anywhere. The launcher's mechanics are exercised with the stand-in
 * program (tests/build/fixtures), the real CLI with mod.ts.
 *
 * Tests that mount things (read-only HOME, noexec /tmp) need root and
 * `unshare`; like the e2e tests they are skipped locally without root and
 * fail in CI.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { e2eTest } from "../e2e/env.ts";
import { buildFixture, buildOnce, haveCli } from "./build_helper.ts";

const TRAILER = 184;

/** A scratch directory outside /tmp, which some tests mount over. */
function scratch(prefix: string): string {
  // Not under /tmp (some tests mount over it), and not under the checkout
  // either: CI may clone into /tmp.
  const parent = "/var/tmp/lazyd-build-test";
  Deno.mkdirSync(parent, { recursive: true });
  return Deno.makeTempDirSync({ dir: parent, prefix });
}

/** Copies the built file into a fresh directory, as a user would. */
async function copied(
  built: Promise<string>,
): Promise<{ dir: string; exe: string }> {
  const dir = scratch("copy-");
  const exe = join(dir, "lazyd");
  Deno.copyFileSync(await built, exe);
  Deno.chmodSync(exe, 0o755);
  return { dir, exe };
}

interface Run {
  code: number;
  signal: Deno.Signal | null;
  stdout: string;
  stderr: string;
}

/** Runs `env -i VARS... cmd args` (so only `vars` reach it). */
async function envI(
  cmd: string,
  args: string[],
  options: { vars?: Record<string, string>; cwd?: string } = {},
): Promise<Run> {
  const vars = Object.entries(options.vars ?? {}).map(([k, v]) => `${k}=${v}`);
  const out = await new Deno.Command("env", {
    args: ["-i", ...vars, cmd, ...args],
    cwd: options.cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return {
    code: out.code,
    signal: out.signal,
    stdout: dec.decode(out.stdout),
    stderr: dec.decode(out.stderr),
  };
}

/**
 * Runs `script` with sh in a private mount namespace, so mounts made there
 * (read-only HOME, noexec /tmp) vanish with it. `$EXE` and `$H` are set.
 */
function inMountNamespace(
  script: string,
  vars: { EXE: string; H: string },
): Promise<Run> {
  return envI("unshare", [
    "-m",
    "--propagation",
    "private",
    "sh",
    "-ec",
    script,
  ], {
    vars: { ...vars, PATH: "/usr/sbin:/usr/bin:/sbin:/bin" },
  });
}

function cleanup(dir: string): void {
  Deno.removeSync(dir, { recursive: true });
}

Deno.test("build: buildinfo records mode, version and hashes; size within 40 MB", async () => {
  const exe = await buildFixture();
  const info = JSON.parse(Deno.readTextFileSync(`${exe}.buildinfo`));
  assert.equal(info.mode, "self-contained");
  assert.equal(info.deno, "2.9.6");
  const bytes = Deno.readFileSync(exe);
  assert.equal(info.size, bytes.length);
  assert.ok(bytes.length <= 40_000_000, `${bytes.length} bytes`);
  const sha = async (b: Uint8Array) =>
    Array.from(
      new Uint8Array(
        await crypto.subtle.digest("SHA-256", b as Uint8Array<ArrayBuffer>),
      ),
      (x) => x.toString(16).padStart(2, "0"),
    ).join("");
  assert.equal(info.sha256.lazyd, await sha(bytes));
  assert.equal(
    info.sha256.bundle,
    await sha(Deno.readFileSync(`${exe}.bundle.js`)),
  );
  assert.match(info.sha256.runtime, /^[0-9a-f]{64}$/);
  assert.ok(
    info.flags.includes("--allow-all") && info.flags.includes("--no-prompt"),
  );
});

Deno.test("build: --version and --help with env -i from another directory", async () => {
  const { dir, exe } = await copied(buildFixture());
  try {
    const v = await envI("./lazyd", ["--version"], { cwd: dir });
    assert.equal(v.code, 0, v.stderr);
    // The bundled npm code (protobuf's int64 parser) runs.
    assert.equal(v.stdout, "lazyd-fixture 0.0.0 int64=9007199254740993\n");
    assert.equal(v.stderr, "");
    const h = await envI(exe, ["--help"], { cwd: "/" });
    assert.equal(h.code, 0, h.stderr);
    assert.match(h.stdout, /^usage: lazyd-fixture/);
  } finally {
    cleanup(dir);
  }
});

Deno.test("build: exit codes pass through", async () => {
  const { dir, exe } = await copied(buildFixture());
  try {
    for (const n of [0, 3, 255]) {
      assert.equal((await envI(exe, ["exit", String(n)])).code, n);
    }
    const bad = await envI(exe, ["--no-such-flag"]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /unknown argument --no-such-flag/);
  } finally {
    cleanup(dir);
  }
});

Deno.test("build: the process is Deno itself (exec), with permissions, FFI and LAZYD_EXE", async () => {
  const { dir, exe } = await copied(buildFixture());
  try {
    const child = new Deno.Command(exe, {
      args: ["probe", "x y", ""],
      clearEnv: true,
      cwd: dir,
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const out = await child.output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    const p = JSON.parse(new TextDecoder().decode(out.stdout));
    assert.equal(p.pid, child.pid, "no intermediate process");
    assert.equal(p.denoPid, child.pid);
    assert.deepEqual(p.args, ["x y", ""]);
    assert.equal(p.cwd, dir);
    assert.equal(p.exe, exe);
  } finally {
    cleanup(dir);
  }
});

Deno.test("build: signals reach the program", async () => {
  const { dir, exe } = await copied(buildFixture());
  try {
    const child = new Deno.Command(exe, {
      args: ["sleep"],
      clearEnv: true,
      stdout: "piped",
      stderr: "null",
    }).spawn();
    const reader = child.stdout.getReader();
    let seen = "";
    while (!seen.includes("ready")) {
      const { value, done } = await reader.read();
      if (done) break;
      seen += new TextDecoder().decode(value);
    }
    assert.match(seen, /ready/);
    child.kill("SIGTERM");
    const status = await child.status;
    reader.releaseLock();
    await child.stdout.cancel();
    assert.equal(status.signal, "SIGTERM");
    assert.equal(status.code, 128 + 15);
  } finally {
    cleanup(dir);
  }
});

Deno.test("build: 8 simultaneous first runs on an empty cache all succeed", async () => {
  const { dir, exe } = await copied(buildFixture());
  const home = join(dir, "home");
  Deno.mkdirSync(home);
  try {
    const runs = await Promise.all(
      Array.from(
        { length: 8 },
        () => envI(exe, ["--version"], { vars: { HOME: home } }),
      ),
    );
    for (const r of runs) {
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, runs[0].stdout);
    }
    assert.match(runs[0].stdout, /^lazyd-fixture /);
    // Exactly the runtime, the bundle and Deno's cache; no temporaries.
    const names = [...Deno.readDirSync(join(home, ".cache", "lazyd"))].map((
      e,
    ) => e.name)
      .sort();
    assert.equal(names.length, 3, names.join(" "));
    assert.equal(names[0], "deno");
    assert.match(names[1], /^deno-2\.9\.6-[0-9a-f]{16}$/);
    assert.match(names[2], /^lazyd-[0-9a-f]{16}\.js$/);
    // A warm run unpacks nothing.
    const warm = await envI(exe, ["--version"], {
      vars: { HOME: home, LAZYD_LAUNCHER_TRACE: "1" },
    });
    assert.equal(warm.code, 0);
    assert.doesNotMatch(warm.stderr, /unpacked/);
    assert.match(warm.stderr, new RegExp(`exec ${home}/\\.cache/lazyd/deno-`));
  } finally {
    cleanup(dir);
  }
});

e2eTest(
  "build: read-only HOME falls back to /tmp",
  { needs: ["root"] },
  async () => {
    const { dir, exe } = await copied(buildFixture());
    const home = join(dir, "home");
    Deno.mkdirSync(home);
    try {
      const r = await inMountNamespace(
        `mount -t tmpfs -o mode=1777 tmpfs /tmp
       mount --bind "$H" "$H" && mount -o remount,ro,bind "$H"
       cd / && exec env -i HOME="$H" LAZYD_LAUNCHER_TRACE=1 "$EXE" --version`,
        { EXE: exe, H: home },
      );
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^lazyd-fixture /);
      assert.match(r.stderr, /exec \/tmp\/lazyd-0\/deno-2\.9\.6-/);
    } finally {
      cleanup(dir);
    }
  },
);

e2eTest("build: read-only HOME and noexec /tmp run from a memfd", {
  needs: ["root"],
}, async () => {
  const { dir, exe } = await copied(buildFixture());
  const home = join(dir, "home");
  Deno.mkdirSync(home);
  try {
    const r = await inMountNamespace(
      `mount -t tmpfs -o noexec,mode=1777 tmpfs /tmp
       mount -t tmpfs -o noexec,mode=1777 tmpfs /dev/shm
       mount --bind "$H" "$H" && mount -o remount,ro,bind "$H"
       cd / && env -i HOME="$H" LAZYD_LAUNCHER_TRACE=1 "$EXE" --version
       env -i HOME="$H" "$EXE" exit 5 || echo "exit=$?"`,
      { EXE: exe, H: home },
    );
    assert.equal(r.code, 0, r.stderr);
    assert.equal(
      r.stdout,
      "lazyd-fixture 0.0.0 int64=9007199254740993\nexit=5\n",
    );
    assert.match(r.stderr, /running from memfd/);
    // The bundle is only read, so the noexec /tmp still holds it.
    assert.match(r.stderr, /exec memfd \/tmp\/lazyd-0\/lazyd-[0-9a-f]{16}\.js/);
  } finally {
    cleanup(dir);
  }
});

e2eTest(
  "build: with nothing writable, runtime and bundle both come from memory",
  {
    needs: ["root"],
  },
  async () => {
    const { dir, exe } = await copied(buildFixture());
    const home = join(dir, "home");
    Deno.mkdirSync(home);
    try {
      const r = await inMountNamespace(
        `mount -t tmpfs -o ro tmpfs /tmp
       mount -t tmpfs -o ro tmpfs /dev/shm
       mount --bind "$H" "$H" && mount -o remount,ro,bind "$H"
       cd / && exec env -i HOME="$H" LAZYD_LAUNCHER_TRACE=1 "$EXE" --version`,
        { EXE: exe, H: home },
      );
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^lazyd-fixture /);
      assert.match(r.stderr, /exec memfd \/proc\/self\/fd\/\d+/);
    } finally {
      cleanup(dir);
    }
  },
);

e2eTest("build: a cache directory someone else can write to is not used", {
  needs: ["root"],
}, async () => {
  const { dir, exe } = await copied(buildFixture());
  const planted = join(dir, "planted");
  Deno.mkdirSync(planted);
  Deno.chmodSync(planted, 0o777);
  const home = join(dir, "home");
  Deno.mkdirSync(home);
  try {
    const r = await envI(exe, ["--version"], {
      vars: { LAZYD_CACHE_DIR: planted, HOME: home, LAZYD_LAUNCHER_TRACE: "1" },
    });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /planted: not ours alone, skipped/);
    assert.deepEqual([...Deno.readDirSync(planted)], []);
  } finally {
    cleanup(dir);
  }
});

e2eTest(
  "build: a damaged file is a clear error",
  { needs: ["root"] },
  async () => {
    const { dir, exe } = await copied(buildFixture());
    try {
      const bytes = Deno.readFileSync(exe);
      // Truncated: no trailer.
      Deno.writeFileSync(exe, bytes.subarray(0, bytes.length - 100));
      const t = await envI(exe, ["--version"]);
      assert.equal(t.code, 127);
      assert.match(t.stderr, /damaged or truncated/);
      // One flipped byte inside the compressed runtime; every cache empty.
      const dv = new DataView(bytes.buffer, bytes.length - TRAILER);
      const off = Number(dv.getBigUint64(0, true));
      const zlen = Number(dv.getBigUint64(8, true));
      bytes[off + Math.floor(zlen / 2)] ^= 0xff;
      Deno.writeFileSync(exe, bytes);
      const home = join(dir, "home");
      Deno.mkdirSync(home);
      const c = await inMountNamespace(
        `mount -t tmpfs -o mode=1777 tmpfs /tmp
       mount -t tmpfs -o mode=1777 tmpfs /dev/shm
       exec env -i HOME="$H" "$EXE" --version`,
        { EXE: exe, H: home },
      );
      assert.equal(c.code, 127);
      assert.match(c.stderr, /does not decompress .*damaged/);
    } finally {
      cleanup(dir);
    }
  },
);

Deno.test({
  name: "build: dist/lazyd of mod.ts answers --version and --help under env -i",
  ignore: !haveCli(),
  fn: async () => {
    const { dir } = await copied(buildOnce());
    try {
      const v = await envI("./lazyd", ["--version"], { cwd: dir });
      assert.equal(v.code, 0, v.stderr);
      assert.match(v.stdout, /lazyd/i);
      const h = await envI("./lazyd", ["--help"], { cwd: dir });
      assert.equal(h.code, 0, h.stderr);
      assert.match(h.stdout + h.stderr, /lazy/i);
      const bad = await envI("./lazyd", ["--no-such-flag"], { cwd: dir });
      assert.notEqual(bad.code, 0);
    } finally {
      cleanup(dir);
    }
  },
});
