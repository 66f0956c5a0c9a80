/**
 * The `lazyd` command line, run as a subprocess (`deno run -A mod.ts`, or
 * `$LAZYD_CMD`): --version and --help, usage errors (exit 2), `inspect`,
 * the verbosity flags as the log shows them, -W/-o, --status-fd, and
 * SIGTERM before restore connects.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  PE_LAZY,
  PE_PRESENT,
  type SyntheticDir,
  writeImageDir,
} from "../src/images/mod.ts";
import {
  closeAll,
  connectRestore,
  isSocket,
  serveDir,
  SOCKET,
  spawnLazyd,
  withTemp,
  word,
  writeAll,
} from "./daemon/_helpers.ts";
import { lazydCommand, waitFor } from "./e2e/env.ts";
import { main } from "../src/cli.ts";

const A = 0x400000;

/** Two processes: 10 with one lazy page, 11 a zombie. */
const IMAGES: SyntheticDir = {
  processes: [
    {
      pid: 10,
      vmas: [{ start: A, end: A + 0x2000 }],
      pagemap: [{ vaddr: A, nrPages: 1, flags: PE_LAZY | PE_PRESENT }],
    },
    { pid: 11, ppid: 10 },
  ],
};

/** Runs lazyd to completion. */
async function lazyd(args: string[]) {
  const l = await spawnLazyd(args);
  return await l.done;
}

/** Asserts a usage error: exit 2, the message, the hint. */
function usage(
  r: { code: number; stdout: string; stderr: string },
  message: RegExp,
): void {
  assert.equal(r.code, 2, `exit ${r.code}: ${r.stderr}`);
  assert.match(r.stderr, /^lazyd: /);
  assert.match(r.stderr, message);
  assert.match(r.stderr, /\nTry 'lazyd --help'\.\n$/);
  assert.equal(r.stdout, "");
}

const TIMESTAMP = /^\(\d{2,}\.\d{6}\) /;

Deno.test("cli: --version and -V", async () => {
  for (const flag of ["--version", "-V"]) {
    const r = await lazyd([flag]);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /^lazyd \d+\.\d+\.\d+\S* \(deno \d+\.\d+\.\d+\)\n$/);
    assert.equal(r.stderr, "");
  }
});

Deno.test("cli: --help and -h, also after a subcommand", async () => {
  for (const args of [["--help"], ["-h"], ["inspect", "--help"]]) {
    const r = await lazyd(args);
    assert.equal(r.code, 0, args.join(" "));
    assert.match(r.stdout, /^lazyd \S+: userfaultfd post-copy page daemon/);
    assert.match(r.stdout, /criu lazy-pages/);
    assert.match(r.stdout, /lazyd inspect -D DIR/);
    for (
      const opt of [
        "--images-dir",
        "--work-dir",
        "--log-file",
        "--verbosity",
        "--status-fd",
        "--stats-file",
        "--fault-window",
        "--background-chunk",
        "--background-inflight",
        "--no-background",
        "--page-server",
        "--tls-no-cn-verify",
      ]
    ) assert.ok(r.stdout.includes(opt), `${opt} documented`);
    assert.match(r.stdout, /default 512; 128 with --page-server/);
    assert.equal(r.stderr, "");
  }
});

Deno.test("cli: unknown flags and stray arguments: exit 2 with a hint", async () => {
  const [unknown, stray, inspectUnknown, inspectStray] = await Promise.all([
    lazyd(["--bogus"]),
    lazyd(["some-dir"]),
    lazyd(["inspect", "--bogus"]),
    lazyd(["inspect", "some-dir"]),
  ]);
  usage(unknown, /--bogus/);
  usage(stray, /some-dir/);
  usage(inspectUnknown, /--bogus/);
  usage(inspectStray, /some-dir/);
});

/**
 * `main()` in this process, for arguments it refuses before it starts
 * anything: the exit status and what it printed on stderr.
 */
async function mainRefuses(args: string[]) {
  const lines: string[] = [];
  const error = console.error;
  console.error = (...a: unknown[]) => lines.push(a.join(" "));
  try {
    const code = await main(args);
    return { code, stdout: "", stderr: lines.map((l) => l + "\n").join("") };
  } finally {
    console.error = error;
  }
}

Deno.test("cli: bad option values: exit 2", async () => {
  const cases: [string[], RegExp][] = [
    [["--status-fd=abc"], /--status-fd takes a file descriptor, not "abc"/],
    [["--status-fd=-1"], /--status-fd takes a file descriptor, not "-1"/],
    [["--status-fd", "2.5"], /--status-fd takes a file descriptor/],
    [["--status-fd"], /--status-fd/], // no value at all
    [
      ["--fault-window", "0"],
      /--fault-window takes a page count from 1 to 65536, not "0"/,
    ],
    [["--fault-window", "65537"], /--fault-window takes a page count/],
    [["--fault-window", "1.5"], /--fault-window takes a page count/],
    [["--fault-window", "many"], /--fault-window takes a page count/],
    [["--background-chunk", "0"], /--background-chunk takes a page count/],
    [["--background-chunk=-4"], /--background-chunk takes a page count/],
    [
      ["--background-inflight", "0"],
      /--background-inflight takes a page count/,
    ],
    [["--page-server"], /--page-server needs --address/],
    [
      ["--page-server", "--address", "localhost"],
      /--page-server needs --port 1\.\.65535, not ""/,
    ],
    [
      ["--page-server", "--address", "localhost", "--port", "65536"],
      /--page-server needs --port 1\.\.65535, not "65536"/,
    ],
    [
      ["--address", "localhost"],
      /--address, --port and --tls go with --page-server/,
    ],
    [["--port", "1234"], /--address, --port and --tls go with --page-server/],
    [["-W"], /-W/],
  ];
  // The directory does not exist: the values are refused before it
  // matters. One case runs as the real command, the rest through main()
  // in this process (nothing is started for them).
  usage(
    await lazyd(["-D", "/nonexistent/lazyd", ...cases[0][0]]),
    cases[0][1],
  );
  for (const [args, message] of cases) {
    usage(await mainRefuses(["-D", "/nonexistent/lazyd", ...args]), message);
  }
});

Deno.test("cli: an empty --status-fd value is refused, not taken as fd 0", async () => {
  // Number("") is 0: a lenient parse would make `--status-fd=` write the
  // readiness byte to (and close) stdin. CRIU rejects the value, and so
  // does lazyd, like " 3", "0x3" and "1e1" for every numeric flag.
  const r = await lazyd(["-D", "/nonexistent/lazyd", "--status-fd="]);
  assert.equal(
    r.code,
    2,
    `"--status-fd=" was accepted (as fd 0); lazyd went on: ${r.stderr.trim()}`,
  );
  usage(r, /--status-fd takes a file descriptor, not ""/);
});

Deno.test("cli: inspect of a missing directory: exit 1 with the ImageError", async () => {
  const dir = "/nonexistent/lazyd-images";
  const [text, json] = await Promise.all([
    lazyd(["inspect", "-D", dir]),
    lazyd(["inspect", "--images-dir", dir, "--json"]),
  ]);
  assert.equal(text.code, 1);
  assert.match(text.stdout, new RegExp(`^images ${dir}\n`));
  assert.match(text.stdout, new RegExp(`\n {2}${dir}: byte 0: `));
  assert.match(text.stdout, /\nlazy restore: NOT possible\n$/);
  assert.equal(json.code, 1);
  const report = JSON.parse(json.stdout);
  assert.equal(report.usable, false);
  assert.equal(report.problems.length, 1);
  assert.match(report.problems[0], new RegExp(`^${dir}: byte 0: `));
});

Deno.test("cli: inspect of good images: exit 0, relative -D resolved", async () => {
  await withTemp("cli", async (tmp) => {
    writeImageDir(join(tmp, "img"), IMAGES);
    const [cmd, ...pre] = lazydCommand();
    const out = await new Deno.Command(cmd, {
      args: [...pre, "inspect", "-D", "img", "--json"],
      cwd: tmp,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    const report = JSON.parse(new TextDecoder().decode(out.stdout));
    assert.equal(report.dir, join(Deno.realPathSync(tmp), "img"));
    assert.equal(report.usable, true);
    assert.equal(report.localOk, true);
    assert.deepEqual(
      report.processes.map((p: { pid: number }) => p.pid),
      [10, 11],
    );
  });
});

Deno.test("cli: bad images or directories: exit 1 before listening", async () => {
  await withTemp("cli", async (tmp) => {
    // No such images directory (and so no work directory either).
    const none = await lazyd(["-D", join(tmp, "none")]);
    assert.equal(none.code, 1);
    assert.match(none.stderr, /cannot set up .*none/);

    // A directory without images: the error goes to the log (stderr).
    Deno.mkdirSync(join(tmp, "empty"));
    const empty = await lazyd(["-D", join(tmp, "empty")]);
    assert.equal(empty.code, 1);
    assert.match(empty.stderr, /^Error \(lazyd\): .*inventory\.img/m);
    assert.ok(!isSocket(join(tmp, "empty", SOCKET)));

    // Lazy pages whose data is on the source: local serving is refused.
    writeImageDir(join(tmp, "remote"), {
      processes: [{
        pid: 1,
        vmas: [{ start: A, end: A + 0x1000 }],
        pagemap: [{ vaddr: A, nrPages: 1, flags: PE_LAZY }],
      }],
    });
    const remote = await lazyd(["-D", join(tmp, "remote")]);
    assert.equal(remote.code, 1);
    assert.match(remote.stderr, /^Error \(lazyd\): .*--page-server/m);
  });
});

/**
 * Starts lazyd on a fresh copy of IMAGES with `args` and a log file, plays
 * a restore that sends the zombie's record and hangs up, and returns the
 * log's lines (lazyd exits 1: restore closed the connection).
 */
async function logAt(tmp: string, name: string, args: string[]) {
  const dir = join(tmp, name);
  writeImageDir(dir, IMAGES);
  const l = await serveDir(dir, ["-o", "lazyd.log", ...args]);
  const fd = await connectRestore(dir);
  try {
    writeAll(fd, word(-11));
  } finally {
    closeAll(fd);
  }
  const r = await l.done;
  assert.equal(r.code, 1, `${args}: ${r.stderr}`);
  return Deno.readTextFileSync(join(dir, "lazyd.log")).split("\n").filter(
    Boolean,
  );
}

/** What the log must hold at `level` for the session of {@linkcode logAt}. */
function assertLevel(lines: string[], level: number, what: string): void {
  const stamped = lines.filter((l) => TIMESTAMP.test(l));
  assert.equal(stamped.length, level >= 3 ? lines.length : 0, what);
  const text = lines.map((l) => l.replace(TIMESTAMP, "")).join("\n");
  // level 0: the one message CRIU prints too
  assert.match(
    text,
    /^lazyd: waiting for criu restore on \/.*lazy-pages\.socket$/m,
    what,
  );
  const has = (re: RegExp) => re.test(text);
  assert.equal(
    has(/^Error \(lazyd\): restore closed the connection/m),
    level >= 1,
    what,
  );
  assert.equal(has(/^restore connected \(pid \d+\)$/m), level >= 3, what);
  assert.equal(has(/^zombie pid -11$/m), level >= 4, what);
  if (level === 0) assert.equal(lines.length, 1, what);
}

Deno.test("cli: -v, -vv, -vN, --verbosity[=N] set the log level", async () => {
  await withTemp("cli", async (tmp) => {
    const cases: [string[], number][] = [
      [[], 2],
      [["-v"], 3],
      [["-vv"], 4],
      [["-vvvvvv"], 4],
      [["-v0"], 0],
      [["-v1"], 1],
      [["-v4"], 4],
      [["--verbosity=3"], 3],
      [["--verbosity"], 3],
    ];
    const logs = await Promise.all(
      cases.map(([args], i) => logAt(tmp, `v${i}`, args)),
    );
    logs.forEach((lines, i) =>
      assertLevel(lines, cases[i][1], `${cases[i][0].join(" ") || "(none)"}`)
    );
  });
});

Deno.test("cli: -W holds the socket, the log (-o) and the stats; SIGTERM before restore connects exits 1", async () => {
  await withTemp("cli", async (tmp) => {
    const images = join(tmp, "images");
    const work = join(tmp, "work");
    writeImageDir(images, IMAGES);
    Deno.mkdirSync(work);
    const sock = join(work, SOCKET);
    for (
      const [signal, extra] of [
        ["SIGTERM", ["-v"]],
        ["SIGINT", ["lazy-pages"]], // `lazyd lazy-pages ...`, like criu
      ] as [Deno.Signal, string[]][]
    ) {
      const l = await spawnLazyd(
        [
          ...extra.filter((a) => a === "lazy-pages"),
          "-D",
          images,
          "-W",
          work,
          "-o",
          "lazyd.log",
          "--stats-file",
          "stats.json",
          ...extra.filter((a) => a !== "lazy-pages"),
        ],
        { waitSocket: sock },
      );
      try {
        assert.ok(!isSocket(join(images, SOCKET)), "not in the images dir");
        const log = join(work, "lazyd.log");
        assert.equal(Deno.statSync(log).mode! & 0o777, 0o600);
        // The socket file appears at bind() and is chmod'ed before
        // listen(); lazyd says it waits once it listens.
        await waitFor(
          "lazyd to listen",
          () => Deno.readTextFileSync(log).includes("waiting for criu restore"),
          {
            timeoutMs: 10_000,
          },
        );
        assert.equal(Deno.statSync(sock).mode! & 0o777, 0o600);
        l.proc.kill(signal);
        const r = await l.done;
        assert.equal(r.code, 1, `${signal}: ${r.stderr}`);
        assert.ok(!isSocket(sock), "the socket file is removed");
        const lines = Deno.readTextFileSync(log).split("\n").filter(Boolean);
        const verbose = extra.includes("-v");
        assert.ok(lines.length >= 1);
        for (const line of lines) {
          assert.equal(TIMESTAMP.test(line), verbose, line);
        }
        assert.ok(
          lines.some((x) =>
            x.endsWith(`lazyd: waiting for criu restore on ${sock}`)
          ),
          lines.join("\n"),
        );
      } finally {
        await l.stop();
        Deno.removeSync(join(work, "lazyd.log"));
      }
    }
  });
});

Deno.test("cli: --status-fd gets one 0 byte once lazyd listens", async () => {
  await withTemp("cli", async (tmp) => {
    writeImageDir(join(tmp, "img"), IMAGES);
    const status = join(tmp, "status");
    const [cmd, ...pre] = lazydCommand();
    // fd 3 of lazyd is the status file (the shell execs lazyd in place).
    const proc = new Deno.Command("sh", {
      args: [
        "-c",
        'exec "$@" 3>"$STATUS"',
        "sh",
        cmd,
        ...pre,
        "-D",
        join(tmp, "img"),
        "--status-fd",
        "3",
      ],
      env: { STATUS: status },
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    try {
      await waitFor("the status byte", () => {
        try {
          return Deno.readFileSync(status).length > 0;
        } catch {
          return false;
        }
      }, { timeoutMs: 30_000 });
      assert.ok(
        isSocket(join(tmp, "img", SOCKET)),
        "listening before the byte",
      );
      assert.deepEqual(Deno.readFileSync(status), new Uint8Array([0]));
      proc.kill("SIGTERM");
      const out = await proc.output();
      assert.equal(out.code, 1);
    } finally {
      try {
        proc.kill("SIGKILL");
      } catch { /* exited */ }
      await proc.status;
    }

    // A status fd that is not open: exit 1, nothing left behind.
    const bad = await lazyd(["-D", join(tmp, "img"), "--status-fd", "77"]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /^Error \(lazyd\): --status-fd 77: .*EBADF/m);
    assert.ok(!isSocket(join(tmp, "img", SOCKET)));
  });
});
