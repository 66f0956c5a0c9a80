/**
 * The `lazyd` command line. Without a subcommand it is a drop-in
 * replacement for `criu lazy-pages` and takes the same flags; `lazyd
 * inspect` reports on an images directory.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { resolve } from "node:path";
import denoJson from "../deno.json" with { type: "json" };
import {
  DEFAULT_BACKGROUND_INFLIGHT,
  DEFAULT_PAGER_OPTIONS,
  DEFAULT_REMOTE_BACKGROUND_CHUNK,
  serve,
} from "./daemon/mod.ts";
import { formatReport, inspect } from "./inspect.ts";
import type { TlsOptions } from "./source/mod.ts";

/** lazyd's version. */
export const VERSION: string = denoJson.version;

const USAGE =
  `lazyd ${VERSION}: userfaultfd post-copy page daemon for CRIU (criu lazy-pages replacement)

Usage:
  lazyd [-D DIR] [-W DIR] [options]   serve lazy pages to \`criu restore --lazy-pages\`
  lazyd inspect -D DIR [--json]        what a lazy restore of DIR involves; exit 0 if usable
  lazyd --version | --help

Options (as criu lazy-pages):
  -D, --images-dir DIR    images directory (default .)
  -W, --work-dir DIR      directory of lazy-pages.socket and the log (default: -D)
  -o, --log-file FILE     log file, relative to the work dir; "-" for stdout (default stderr)
  -v, -vv, -vN, --verbosity=N
                          log level 0..4 (default 2; 3 adds info and timestamps, 4 debug)
      --status-fd FD      write one 0 byte to FD and close it once restore may start
      --page-server       fetch lazy pages from the source's page server
                          (criu dump --lazy-pages / criu page-server --lazy-pages)
      --address HOST      page server host name or address (IPv4, IPv6)
      --port PORT         page server TCP port
      --tls               mutual X.509 TLS with the page server, as CRIU's --tls
      --tls-cacert FILE   trusted CAs (default: system store + /etc/pki/CA/cacert.pem)
      --tls-cacrl FILE    revocation list (default /etc/pki/CA/cacrl.pem if readable)
      --tls-cert FILE     our certificate (default /etc/pki/criu/cert.pem)
      --tls-key FILE      our key (default /etc/pki/criu/private/key.pem)
      --tls-no-cn-verify  do not check the server certificate's name against --address
Options of lazyd:
      --stats-file FILE   write JSON statistics here at exit (relative to the work dir)
      --fault-window N    pages fetched per fault, from the faulting page on (default ${
    DEFAULT_PAGER_OPTIONS.faultWindow / 4096
  })
      --background-chunk N
                          pages per background copy or request (default ${
    DEFAULT_PAGER_OPTIONS.backgroundChunk / 4096
  }; ${DEFAULT_REMOTE_BACKGROUND_CHUNK / 4096} with --page-server)
      --background-inflight N
                          with --page-server: background pages asked for and not
                          yet received, at most (default ${
    DEFAULT_BACKGROUND_INFLIGHT / 4096
  })
      --no-background     move pages on faults only

Exit status: 0 when every process got all its pages (or exited); 1 otherwise.
A process whose pages cannot be delivered is killed, never left running on zeros.`;

/** A command-line mistake: printed with a hint, exit status 2. */
class UsageError extends Error {}

/** Turns CRIU's `-vvv` / `-v4` / `--verbosity[=N]` into a level. */
function takeVerbosity(args: string[]): { rest: string[]; level: number } {
  let level = 2;
  let explicit: number | undefined;
  const rest: string[] = [];
  for (const a of args) {
    let m: RegExpMatchArray | null;
    if ((m = a.match(/^-(v+)$/))) level += m[1].length;
    else if ((m = a.match(/^-v(\d+)$/) ?? a.match(/^--verbosity=(\d+)$/))) {
      explicit = Number(m[1]);
    } else if (a === "--verbosity") level += 1;
    else rest.push(a);
  }
  return { rest, level: Math.min(explicit ?? level, 4) };
}

/** A decimal integer, strictly: no sign, blanks, hex or exponent. */
function integer(v: string | undefined): number {
  return v !== undefined && /^\d{1,9}$/.test(v) ? Number(v) : NaN;
}

function pages(name: string, v: string | undefined, dflt: number): number {
  if (v === undefined) return dflt;
  const n = integer(v);
  if (!Number.isInteger(n) || n < 1 || n > 65536) {
    throw new UsageError(
      `--${name} takes a page count from 1 to 65536, not "${v}"`,
    );
  }
  return n * 4096;
}

function readable(path: string): boolean {
  try {
    Deno.openSync(path, { read: true }).close();
    return true;
  } catch {
    return false;
  }
}

/** CRIU's TLS options and defaults (page-server-protocol.md §8). */
function tlsOptions(v: {
  tls?: boolean;
  address?: string;
  "tls-cacert"?: string;
  "tls-cacrl"?: string;
  "tls-cert"?: string;
  "tls-key"?: string;
  "tls-no-cn-verify"?: boolean;
}): TlsOptions | undefined {
  if (!v.tls) return undefined;
  const systemCa = "/etc/pki/CA/cacert.pem";
  const defaultCrl = "/etc/pki/CA/cacrl.pem";
  return {
    ...(v["tls-cacert"] !== undefined ? { caCert: v["tls-cacert"] } : {
      systemTrust: true,
      caCert: readable(systemCa) ? systemCa : undefined,
    }),
    caCrl: v["tls-cacrl"] ?? (readable(defaultCrl) ? defaultCrl : undefined),
    cert: v["tls-cert"] ?? "/etc/pki/criu/cert.pem",
    key: v["tls-key"] ?? "/etc/pki/criu/private/key.pem",
    verifyName: v["tls-no-cn-verify"] ? undefined : v.address,
  };
}

async function daemon(args: string[]): Promise<number> {
  const { rest, level } = takeVerbosity(args);
  const { values } = parseArgs({
    args: rest,
    options: {
      "images-dir": { type: "string", short: "D" },
      "work-dir": { type: "string", short: "W" },
      "log-file": { type: "string", short: "o" },
      "status-fd": { type: "string" },
      "stats-file": { type: "string" },
      "fault-window": { type: "string" },
      "background-chunk": { type: "string" },
      "no-default-config": { type: "boolean" },
      "page-server": { type: "boolean" },
      address: { type: "string" },
      port: { type: "string" },
      "background-inflight": { type: "string" },
      "no-background": { type: "boolean" },
      tls: { type: "boolean" },
      "tls-cacert": { type: "string" },
      "tls-cacrl": { type: "string" },
      "tls-cert": { type: "string" },
      "tls-key": { type: "string" },
      "tls-no-cn-verify": { type: "boolean" },
    },
    strict: true,
    allowPositionals: false,
  });
  const imagesDir = resolve(values["images-dir"] ?? ".");
  const workDir = resolve(values["work-dir"] ?? imagesDir);
  let statusFd: number | undefined;
  if (values["status-fd"] !== undefined) {
    statusFd = integer(values["status-fd"]);
    if (!Number.isInteger(statusFd) || statusFd < 0) {
      throw new UsageError(
        `--status-fd takes a file descriptor, not "${values["status-fd"]}"`,
      );
    }
  }
  let pageServer: { host: string; port: number; tls?: TlsOptions } | undefined;
  if (values["page-server"]) {
    const port = integer(values.port);
    if (!values.address) throw new UsageError("--page-server needs --address");
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      throw new UsageError(
        `--page-server needs --port 1..65535, not "${values.port ?? ""}"`,
      );
    }
    pageServer = { host: values.address, port, tls: tlsOptions(values) };
  } else if (
    values.address !== undefined || values.port !== undefined || values.tls
  ) {
    throw new UsageError("--address, --port and --tls go with --page-server");
  }
  const entry = Deno.mainModule;
  return await serve({
    imagesDir,
    workDir,
    logFile: values["log-file"],
    verbosity: level,
    statusFd,
    statsFile: values["stats-file"],
    pager: {
      faultWindow: pages(
        "fault-window",
        values["fault-window"],
        DEFAULT_PAGER_OPTIONS.faultWindow,
      ),
      backgroundChunk: pages(
        "background-chunk",
        values["background-chunk"],
        pageServer
          ? DEFAULT_REMOTE_BACKGROUND_CHUNK
          : DEFAULT_PAGER_OPTIONS.backgroundChunk,
      ),
    },
    pageServer,
    background: !values["no-background"],
    backgroundInflight: pages(
      "background-inflight",
      values["background-inflight"],
      DEFAULT_BACKGROUND_INFLIGHT,
    ),
    workerModule: entry,
  });
}

function inspectCommand(args: string[]): number {
  const { values } = parseArgs({
    args,
    options: {
      "images-dir": { type: "string", short: "D" },
      json: { type: "boolean" },
    },
    strict: true,
    allowPositionals: false,
  });
  const report = inspect(resolve(values["images-dir"] ?? "."));
  console.log(
    values.json ? JSON.stringify(report, null, 2) : formatReport(report),
  );
  return report.usable ? 0 : 1;
}

/** Runs the command line; resolves with the exit status. */
export async function main(args: string[]): Promise<number> {
  try {
    if (args.includes("--help") || args.includes("-h")) {
      console.log(USAGE);
      return 0;
    }
    if (args.includes("--version") || args.includes("-V")) {
      console.log(`lazyd ${VERSION} (deno ${Deno.version.deno})`);
      return 0;
    }
    if (args[0] === "inspect") return inspectCommand(args.slice(1));
    if (args[0] === "lazy-pages") args = args.slice(1); // `lazyd lazy-pages ...` like criu
    return await daemon(args);
  } catch (e) {
    if (
      e instanceof UsageError ||
      (e as { code?: string }).code?.startsWith("ERR_PARSE_ARGS")
    ) {
      console.error(`lazyd: ${(e as Error).message}\nTry 'lazyd --help'.`);
      return 2;
    }
    throw e;
  }
}
