/**
 * TLS for the page-server connection (`--tls`), as CRIU does it: GnuTLS,
 * X.509 on both sides, default priorities, the handshake right after the
 * TCP connect. This is a synchronous, never-blocking client session over
 * a connected socket fd, meant to be driven from the daemon's epoll loop.
 *
 * Driving it:
 *
 * | call returns                  | then                                                               |
 * | ----------------------------- | ------------------------------------------------------------------ |
 * | `handshake()` `"want-read"`   | wait for `EPOLLIN`, call `handshake()` again                       |
 * | `handshake()` `"want-write"`  | wait for `EPOLLOUT`, call `handshake()` again                      |
 * | `handshake()` `"done"`        | send requests                                                      |
 * | `recv()` a count              | call `recv()` again (see below)                                    |
 * | `recv()` `null`               | wait for `EPOLLIN` (`EPOLLOUT` instead if `wants()` is `"write"`)  |
 * | `recv()` `0`                  | the server closed the connection (see {@linkcode TlsSession.eof}) |
 * | `send()` a count              | that many bytes went out; send the rest                            |
 * | `send()` `null`               | wait for `EPOLLOUT`, then `send()` the same bytes again            |
 * | `bye()` `"want-write"`        | wait for `EPOLLOUT`, call `bye()` again                            |
 *
 * The hazard of TLS in an epoll loop: GnuTLS reads whole records from the
 * socket and decrypts them into its own buffer. If `recv()` is given less
 * room than the record held, the rest stays in that buffer while the
 * socket itself may have nothing left to read, so epoll will not report
 * the fd again and the loop stalls with the answer already in memory
 * (CRIU issue #1380 is this bug in the lazy path). So: after a successful
 * `recv()`, keep calling `recv()` until it returns `null` before going
 * back to epoll; if you must stop early (your buffer is full),
 * `pending() > 0` tells you that data is waiting without any epoll event.
 * Use level-triggered epoll: a `recv()` that returns `null` can have left
 * further records in the kernel's socket buffer (e.g. after handling a TLS
 * 1.3 session ticket), which only a level-triggered wait reports.
 *
 * @module
 */
import {
  E,
  errno,
  errnoName,
  setNonblocking,
  strerror,
} from "../../ffi/mod.ts";
import {
  GNUTLS_E,
  GNUTLS_INIT,
  GNUTLS_SHUT,
  gnutlsAlertName,
  GnutlsCredentials,
  GnutlsError,
  gnutlsErrorIsFatal,
  gnutlsErrorName,
  GnutlsSession,
  gnutlsStrerror,
  verificationStatusText,
} from "../../ffi/gnutls.ts";

/** Options of {@linkcode TlsSession.client}: CRIU's `--tls-*` flags, defaults already applied by the caller. */
export interface TlsOptions {
  /**
   * PEM file of trusted CA certificates (`--tls-cacert`); it must hold at
   * least one certificate. CRIU without `--tls-cacert` trusts the system
   * store plus `/etc/pki/CA/cacert.pem` if that file exists: pass
   * `systemTrust: true` and that path only when it exists.
   */
  caCert?: string;
  /** Also trust the system CA store (`gnutls_certificate_set_x509_system_trust`). Default: `caCert === undefined`. */
  systemTrust?: boolean;
  /**
   * PEM certificate revocation list (`--tls-cacrl`). A given path must be
   * readable; CRIU's default `/etc/pki/CA/cacrl.pem` is used only if
   * readable, so pass it only then. Like CRIU, a file holding no CRL is
   * accepted.
   */
  caCrl?: string;
  /** Our PEM certificate (`--tls-cert`, CRIU's default `/etc/pki/criu/cert.pem`); needs `key`. */
  cert?: string;
  /** Our PEM private key (`--tls-key`, CRIU's default `/etc/pki/criu/private/key.pem`); needs `cert`. */
  key?: string;
  /**
   * The name the server's certificate must match: CRIU's `--address`
   * string (an IP literal must then be an IP subjectAltName). `undefined`
   * is `--tls-no-cn-verify`: the chain is still verified.
   */
  verifyName?: string;
}

/** What a non-blocking {@linkcode TlsSession.handshake} or {@linkcode TlsSession.bye} step needs next. */
export type TlsStep = "done" | "want-read" | "want-write";

/** How many certificates and CRLs {@linkcode TlsSession.client} loaded (for logs). */
export interface TlsLoaded {
  /** CAs from the system store (0 if not used). */
  systemCaCerts: number;
  /** CAs from `caCert` (0 if not given). */
  caCerts: number;
  /** CRLs from `caCrl` (0 if not given). */
  crls: number;
  /** Whether a client certificate was loaded. */
  clientCert: boolean;
}

/** A TLS failure: bad credentials, a failed handshake or verification, a broken session. */
export class TlsError extends Error {
  /** The `GNUTLS_E_*` code (negative), e.g. -348 for a verification failure. */
  readonly code: number;
  /** For verification failures: the `GNUTLS_CERT_*` status bits. */
  readonly status: number | undefined;
  /** For alerts received from the server: the TLS alert number. */
  readonly alert: number | undefined;

  /** Builds the error from a message and GnuTLS details. */
  constructor(
    message: string,
    details: { code: number; status?: number; alert?: number },
  ) {
    super(message);
    this.name = "TlsError";
    this.code = details.code;
    this.status = details.status;
    this.alert = details.alert;
  }
}

/** Largest TLS record payload (2^14): a record GnuTLS holds back is never longer. */
const MAX_RECORD = 16384;

/** A bound on non-fatal codes retried in a row (each consumes input, so this is never reached in practice). */
const MAX_RETRIES = 1000;

function describe(code: number): string {
  return `${gnutlsStrerror(code)} (${gnutlsErrorName(code)})`;
}

// GnuTLS maps socket errors to PUSH/PULL_ERROR (ECONNRESET to
// PREMATURE_TERMINATION) and forgets the errno, but errno itself still
// holds it right after the call.
function socketDetail(code: number, err: number): string {
  const socket = code === GNUTLS_E.PUSH_ERROR ||
    code === GNUTLS_E.PULL_ERROR ||
    (code === GNUTLS_E.PREMATURE_TERMINATION && err === E.ECONNRESET);
  return socket && err !== 0
    ? `; socket: ${strerror(err)} (${errnoName(err)})`
    : "";
}

/** Why `path` cannot be read, from the OS, or null if it can. */
function unreadable(path: string): string | null {
  try {
    const f = Deno.openSync(path, { read: true });
    try {
      if (!f.statSync().isFile) return "not a regular file";
    } finally {
      f.close();
    }
    return null;
  } catch (e) {
    // Deno appends ": open '<path>'"; the caller names the file already.
    return e instanceof Error ? e.message.replace(/: \w+ '.*'$/, "") : `${e}`;
  }
}

function textOf(path: string): string {
  try {
    return new TextDecoder().decode(Deno.readFileSync(path));
  } catch {
    return "";
  }
}

function fileError(
  what: string,
  path: string,
  code: number,
): TlsError {
  const os = unreadable(path);
  return new TlsError(
    `TLS: cannot load ${what} ${path}: ${os ?? describe(code)}`,
    { code },
  );
}

function loadCredentials(
  cred: GnutlsCredentials,
  options: TlsOptions,
): TlsLoaded {
  const loaded: TlsLoaded = {
    systemCaCerts: 0,
    caCerts: 0,
    crls: 0,
    clientCert: false,
  };
  if (options.systemTrust ?? options.caCert === undefined) {
    const r = cred.setSystemTrust();
    if (r < 0) {
      throw new TlsError(
        `TLS: cannot load the system's trusted CA certificates: ${describe(r)}`,
        { code: r },
      );
    }
    loaded.systemCaCerts = r;
  }
  if (options.caCert !== undefined) {
    const r = cred.setTrustFile(options.caCert);
    if (r < 0) throw fileError("CA certificates from", options.caCert, r);
    if (r === 0) {
      throw new TlsError(
        `TLS: no CA certificate in ${options.caCert} (expected PEM "BEGIN CERTIFICATE" blocks)`,
        { code: GNUTLS_E.NO_CERTIFICATE_FOUND },
      );
    }
    loaded.caCerts = r;
  }
  // After the CAs, as CRIU does: GnuTLS files CRLs into the same trust list.
  if (options.caCrl !== undefined) {
    const r = cred.setCrlFile(options.caCrl);
    if (r < 0) {
      throw fileError("certificate revocation list", options.caCrl, r);
    }
    loaded.crls = r;
  }
  if (options.cert !== undefined && options.key !== undefined) {
    const r = cred.setKeyFile(options.cert, options.key);
    if (r < 0) throw keyPairError(options.cert, options.key, r);
    loaded.clientCert = true;
  }
  return loaded;
}

/** Names the file at fault when GnuTLS only says the pair did not load. */
function keyPairError(cert: string, key: string, code: number): TlsError {
  for (const [what, path] of [["certificate", cert], ["key", key]]) {
    const os = unreadable(path);
    if (os !== null) {
      return new TlsError(`TLS: cannot read ${what} file ${path}: ${os}`, {
        code,
      });
    }
  }
  if (!/-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----/.test(textOf(key))) {
    return new TlsError(
      `TLS: no PEM private key in key file ${key} (${describe(code)})`,
      { code },
    );
  }
  if (!textOf(cert).includes("-----BEGIN CERTIFICATE-----")) {
    return new TlsError(
      `TLS: no PEM certificate in certificate file ${cert} (${describe(code)})`,
      { code },
    );
  }
  return new TlsError(
    `TLS: cannot load certificate ${cert} with key ${key}: ${describe(code)}`,
    { code },
  );
}

function checkPath(what: string, path: string | undefined): void {
  if (path !== undefined && (path === "" || path.includes("\0"))) {
    throw new RangeError(`TLS ${what}: bad path ${JSON.stringify(path)}`);
  }
}

type State = "handshake" | "open" | "closing" | "failed" | "closed";

/**
 * One TLS client session over a connected stream socket. Every method
 * does at most one non-blocking step and never waits; see the module
 * documentation for how to drive it from epoll. Not reentrant (one
 * thread, one caller).
 */
export class TlsSession {
  #session: GnutlsSession;
  #cred: GnutlsCredentials;
  #state: State = "handshake";
  #eof: "close-notify" | "unclean" | null = null;
  // The record GnuTLS encrypted and still holds after E_AGAIN: a copy of
  // the start of the data it was made from (see send()).
  #unsent: Uint8Array | null = null;
  /** What the constructor loaded, for logs. */
  readonly loaded: TlsLoaded;

  private constructor(
    session: GnutlsSession,
    cred: GnutlsCredentials,
    loaded: TlsLoaded,
  ) {
    this.#session = session;
    this.#cred = cred;
    this.loaded = loaded;
  }

  /**
   * Sets up a client session on `fd`, a connected stream socket: loads the
   * credentials (errors name the file), sets GnuTLS's default priorities,
   * arranges for the server certificate to be verified inside the
   * handshake (chain, CRL, and `verifyName` if given) and binds `fd` as
   * the transport. `fd` is switched to O_NONBLOCK once everything else
   * has succeeded (an inherited `--ps-socket` may be blocking, and GnuTLS
   * on a blocking fd would block the loop); it is never closed here. Nothing is sent until
   * {@linkcode TlsSession.handshake}. Throws {@linkcode TlsError},
   * `RangeError` for malformed options, SysError from `fcntl`, or `Error`
   * if GnuTLS cannot be loaded.
   */
  static client(fd: number, options: TlsOptions = {}): TlsSession {
    checkPath("caCert", options.caCert);
    checkPath("caCrl", options.caCrl);
    checkPath("cert", options.cert);
    checkPath("key", options.key);
    if ((options.cert === undefined) !== (options.key === undefined)) {
      throw new RangeError("TLS: cert and key must be given together");
    }
    if (options.verifyName !== undefined) {
      const n = options.verifyName;
      if (n === "" || n.includes("\0")) {
        throw new RangeError(`TLS verifyName: bad name ${JSON.stringify(n)}`);
      }
    }
    if (
      options.systemTrust === false && options.caCert === undefined
    ) {
      throw new RangeError("TLS: no trusted CAs (caCert or systemTrust)");
    }
    let cred: GnutlsCredentials | undefined;
    let session: GnutlsSession | undefined;
    try {
      cred = GnutlsCredentials.allocate();
      const loaded = loadCredentials(cred, options);
      // NONBLOCK: never wait inside GnuTLS; NO_SIGNAL: EPIPE, not SIGPIPE,
      // when the server has gone.
      session = GnutlsSession.init(
        GNUTLS_INIT.CLIENT | GNUTLS_INIT.NONBLOCK | GNUTLS_INIT.NO_SIGNAL,
      );
      setup(
        session.setCredentials(cred),
        "gnutls_credentials_set",
      );
      setup(session.setDefaultPriority(), "gnutls_set_default_priority");
      // Verified inside the handshake, so a bad server gets an alert and
      // never sees a byte of ours; CRIU verifies after the handshake with
      // gnutls_certificate_verify_peers3 and the same name, same result.
      session.setVerifyCert(options.verifyName ?? null);
      setNonblocking(fd, true);
      session.setTransportFd(fd);
      return new TlsSession(session, cred, loaded);
    } catch (e) {
      session?.deinit();
      cred?.free();
      if (e instanceof GnutlsError) {
        throw new TlsError(`TLS: ${e.message}`, { code: e.code });
      }
      throw e;
    }
  }

  /**
   * One non-blocking handshake step. `"want-read"`/`"want-write"`: wait
   * for the socket to become readable/writable and call again. Throws
   * {@linkcode TlsError} when the handshake fails; a certificate that
   * does not verify gives code GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR,
   * `status` bits and GnuTLS's reasons in the message; an alert from the
   * server gives `alert` and its name. A server that never answers is
   * not detected here: the caller enforces its own deadline.
   */
  handshake(): TlsStep {
    if (this.#state === "open") return "done";
    this.#expect("handshake", "handshake");
    for (let i = 0; i < MAX_RETRIES; i++) {
      const r = this.#session.handshake();
      if (r === GNUTLS_E.SUCCESS) {
        this.#state = "open";
        return "done";
      }
      if (r === GNUTLS_E.AGAIN) return this.#direction();
      const err = errno(); // before any other call can overwrite it
      // Non-fatal codes (EINTR, a warning alert) are retried, as CRIU's
      // handshake loop does.
      if (r === GNUTLS_E.INTERRUPTED || !gnutlsErrorIsFatal(r)) continue;
      throw this.#fail("TLS handshake failed", r, err);
    }
    throw this.#fail("TLS handshake failed", GNUTLS_E.AGAIN, 0);
  }

  /**
   * Reads decrypted bytes into `into` (non-empty). Returns the count
   * (at most one record's worth; call again until `null`, see the module
   * documentation), `0` once the server has closed the connection (TLS
   * close_notify, or — as CRIU treats them — a TCP EOF or reset without
   * it, see {@linkcode TlsSession.eof}), or `null` when nothing is
   * available without blocking (GNUTLS_E_AGAIN). Throws
   * {@linkcode TlsError} on a broken session.
   */
  recv(into: Uint8Array): number | null {
    if (into.length === 0) throw new RangeError("TLS recv: empty buffer");
    if (this.#eof !== null) return 0;
    this.#expect("recv", "open", "closing");
    for (let i = 0; i < MAX_RETRIES; i++) {
      const r = this.#session.recordRecv(into);
      if (r > 0) return r;
      if (r === 0) {
        this.#eof = "close-notify";
        return 0;
      }
      switch (r) {
        case GNUTLS_E.AGAIN:
          return null;
        // EINTR; a TLS 1.2 HelloRequest, which a client may ignore (CRIU's
        // server never renegotiates); a warning alert.
        case GNUTLS_E.INTERRUPTED:
        case GNUTLS_E.REHANDSHAKE:
        case GNUTLS_E.WARNING_ALERT_RECEIVED:
          continue;
        case GNUTLS_E.PREMATURE_TERMINATION:
          this.#eof = "unclean";
          return 0;
        case GNUTLS_E.PULL_ERROR: {
          // CRIU's pull callback turns ECONNRESET into EOF (GnuTLS 3.7
          // itself reports it as PREMATURE_TERMINATION, older ones not).
          const err = errno();
          if (err === E.ECONNRESET) {
            this.#eof = "unclean";
            return 0;
          }
          throw this.#fail("TLS receive failed", r, err);
        }
        default:
          throw this.#fail("TLS receive failed", r, errno());
      }
    }
    return null;
  }

  /**
   * Decrypted bytes GnuTLS holds that a `recv()` returns without touching
   * the socket (`gnutls_record_check_pending`). While this is non-zero,
   * epoll will not necessarily report the socket readable: drain with
   * `recv()` first. 0 once closed.
   */
  pending(): number {
    if (this.#state === "closed" || this.#state === "failed") return 0;
    return this.#session.recordCheckPending();
  }

  /**
   * Encrypts and sends `data`. Returns how many bytes of `data` went out
   * (at most one record, 16 KiB; send the rest with further calls), or
   * `null` if the socket is full.
   *
   * GnuTLS's rule after `null` (GNUTLS_E_AGAIN): the record has already
   * been encrypted into GnuTLS's buffer, and the next send, whatever data
   * it is given, first finishes that record and returns *its* byte count.
   * So after `null`, wait for `EPOLLOUT` and call `send()` again with the
   * same bytes (more may follow them: a queue that grew meanwhile is fine);
   * the count it returns is, as always, of the bytes at the start of
   * `data`. This method checks that rule (it keeps a copy of the bytes
   * GnuTLS holds) and throws `Error` if the new data starts differently,
   * before anything further is sent. An empty `data` returns 0. Throws
   * {@linkcode TlsError} on a broken session, e.g. when the server has
   * gone: GNUTLS_E_PUSH_ERROR (EPIPE) or GNUTLS_E_PREMATURE_TERMINATION
   * (ECONNRESET), the message naming the errno.
   */
  send(data: Uint8Array): number | null {
    this.#expect("send", "open");
    if (this.#eof === "unclean") {
      // GnuTLS has invalidated the session; say why instead of its
      // "The TLS session is invalid".
      throw new TlsError(
        "TLS send failed: the server closed the connection without close_notify",
        { code: GNUTLS_E.PREMATURE_TERMINATION },
      );
    }
    if (data.length === 0) return 0;
    const unsent = this.#unsent;
    if (unsent !== null) {
      const n = Math.min(unsent.length, data.length);
      for (let i = 0; i < n; i++) {
        if (unsent[i] !== data[i]) {
          throw new Error(
            `TLS send: after null, send must be retried with the same bytes (they differ at byte ${i})`,
          );
        }
      }
    }
    for (let i = 0; i < MAX_RETRIES; i++) {
      // (NULL, 0) resumes the held record; passing data would not change
      // what is sent, only obscure that.
      const r = this.#session.recordSend(unsent === null ? data : null);
      if (r >= 0) {
        if (unsent !== null && r > data.length) {
          throw new Error(
            `TLS send: ${r} bytes were held from the interrupted send, but only ${data.length} were passed again`,
          );
        }
        this.#unsent = null;
        return r;
      }
      if (r === GNUTLS_E.AGAIN) {
        this.#unsent ??= data.slice(0, MAX_RECORD);
        return null;
      }
      if (r === GNUTLS_E.INTERRUPTED) continue;
      throw this.#fail("TLS send failed", r, errno());
    }
    return null;
  }

  /**
   * The direction the last interrupted call (a `null` or `"want-*"`
   * result) was waiting for (`gnutls_record_get_direction`): `"read"`
   * (wait for `EPOLLIN`) or `"write"` (`EPOLLOUT`). Mostly the obvious
   * one; a `recv()` that had to answer a TLS 1.3 key update can need
   * `"write"`.
   */
  wants(): "read" | "write" {
    this.#expect("wants", "handshake", "open", "closing");
    return this.#session.recordGetDirection() === 1 ? "write" : "read";
  }

  /**
   * Sends a close_notify (`gnutls_bye(GNUTLS_SHUT_WR)`), first flushing a
   * record a `send()` left pending. `"want-write"`: wait for `EPOLLOUT`
   * and call again. After `"done"` nothing more can be sent, but `recv()`
   * still works: CRIU, after a successful session, waits for the server's
   * close_notify (`recv()` returning 0). Calling it again after `"done"`
   * returns `"done"`. Throws {@linkcode TlsError}.
   */
  bye(): TlsStep {
    if (this.#state === "closing") return "done";
    this.#expect("bye", "open");
    for (let i = 0; i < MAX_RETRIES; i++) {
      const r = this.#session.bye(GNUTLS_SHUT.WR);
      if (r === GNUTLS_E.SUCCESS) {
        this.#state = "closing";
        this.#unsent = null;
        return "done";
      }
      if (r === GNUTLS_E.AGAIN) return this.#direction();
      if (r === GNUTLS_E.INTERRUPTED) continue;
      throw this.#fail("TLS close_notify failed", r, errno());
    }
    throw this.#fail("TLS close_notify failed", GNUTLS_E.AGAIN, 0);
  }

  /**
   * How the server ended the stream once `recv()` returned 0:
   * `"close-notify"` (a proper TLS close), `"unclean"` (TCP EOF or reset
   * without it; CRIU accepts that too), or `null` while open.
   */
  get eof(): "close-notify" | "unclean" | null {
    return this.#eof;
  }

  /** The negotiated protocol, e.g. `"TLS1.3"`, once the handshake is done. */
  get protocol(): string | null {
    return this.#state === "open" || this.#state === "closing"
      ? this.#session.protocolName()
      : null;
  }

  /**
   * Frees the session and credentials (`gnutls_deinit`,
   * `gnutls_certificate_free_credentials`). Sends nothing (call
   * {@linkcode TlsSession.bye} first for a clean close) and never closes
   * the fd. Idempotent; other methods throw afterwards.
   */
  close(): void {
    if (this.#state === "closed") return;
    this.#state = "closed";
    this.#unsent = null;
    this.#session.deinit();
    this.#cred.free();
  }

  #expect(call: string, ...states: State[]): void {
    if (!states.includes(this.#state)) {
      throw new Error(`TLS ${call}: session is ${this.#state}`);
    }
  }

  #direction(): TlsStep {
    return this.#session.recordGetDirection() === 1
      ? "want-write"
      : "want-read";
  }

  /** Builds the error for a fatal code and marks the session failed. */
  #fail(what: string, code: number, err: number): TlsError {
    let message = `${what}: ${describe(code)}`;
    let status: number | undefined;
    let alert: number | undefined;
    if (code === GNUTLS_E.CERTIFICATE_VERIFICATION_ERROR) {
      status = this.#session.verifyCertStatus();
      message += `: server certificate: ${verificationStatusText(status)}`;
    } else if (
      code === GNUTLS_E.FATAL_ALERT_RECEIVED ||
      code === GNUTLS_E.WARNING_ALERT_RECEIVED
    ) {
      alert = this.#session.alert();
      message += `: the server sent alert ${alert} (${gnutlsAlertName(alert)})`;
    } else {
      message += socketDetail(code, err);
    }
    this.#state = "failed";
    return new TlsError(message, { code, status, alert });
  }
}

function setup(code: number, call: string): void {
  if (code < 0) {
    throw new TlsError(`TLS: ${call}: ${describe(code)}`, { code });
  }
}
