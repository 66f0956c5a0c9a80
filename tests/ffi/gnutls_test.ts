import assert from "node:assert/strict";
import { closeFd, readFd, setNonblocking, socketpair } from "../../ffi/mod.ts";
import {
  GNUTLS_CERT,
  GNUTLS_E,
  GNUTLS_INIT,
  gnutlsAlertName,
  GnutlsCredentials,
  GnutlsError,
  gnutlsErrorIsFatal,
  gnutlsErrorName,
  GnutlsSession,
  gnutlsStrerror,
  gnutlsVersion,
  verificationStatusText,
} from "../../ffi/gnutls.ts";
import { IN_CI } from "../e2e/env.ts";
import { haveOpenssl, makePki } from "../source/fixtures/tls_peer.ts";

Deno.test("gnutls: the library loads and reports a 3.x version", () => {
  assert.match(gnutlsVersion(), /^3\.\d+\.\d+/);
});

Deno.test("gnutls: error codes have names, messages and fatality", () => {
  assert.equal(gnutlsErrorName(GNUTLS_E.AGAIN), "GNUTLS_E_AGAIN");
  assert.equal(
    gnutlsErrorName(GNUTLS_E.CERTIFICATE_VERIFICATION_ERROR),
    "GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR",
  );
  assert.equal(gnutlsErrorName(-123456), "GNUTLS_E(-123456)");
  assert.match(gnutlsStrerror(GNUTLS_E.AGAIN), /try again/i);
  assert.equal(gnutlsErrorIsFatal(GNUTLS_E.AGAIN), false);
  assert.equal(gnutlsErrorIsFatal(GNUTLS_E.INTERRUPTED), false);
  assert.equal(gnutlsErrorIsFatal(GNUTLS_E.WARNING_ALERT_RECEIVED), false);
  assert.equal(
    gnutlsErrorIsFatal(GNUTLS_E.CERTIFICATE_VERIFICATION_ERROR),
    true,
  );
  assert.equal(gnutlsErrorIsFatal(GNUTLS_E.PREMATURE_TERMINATION), true);
  assert.equal(gnutlsAlertName(116), "Certificate is required");
  const e = new GnutlsError("gnutls_init", GNUTLS_E.FILE_ERROR);
  assert.equal(e.code, GNUTLS_E.FILE_ERROR);
  assert.match(e.message, /^gnutls_init: .* \(GNUTLS_E_FILE_ERROR\)$/);
});

Deno.test("gnutls: verification status text (gnutls_free'd every time)", () => {
  assert.equal(verificationStatusText(0), "The certificate is trusted.");
  for (let i = 0; i < 100; i++) {
    assert.equal(
      verificationStatusText(
        GNUTLS_CERT.INVALID | GNUTLS_CERT.SIGNER_NOT_FOUND,
      ),
      "The certificate is NOT trusted. The certificate issuer is unknown.",
    );
  }
  assert.match(
    verificationStatusText(GNUTLS_CERT.INVALID | GNUTLS_CERT.REVOKED),
    /revoked/,
  );
  assert.match(
    verificationStatusText(GNUTLS_CERT.INVALID | GNUTLS_CERT.UNEXPECTED_OWNER),
    /name in the certificate does not match/,
  );
});

Deno.test("gnutls: credentials return counts and codes; free is final", () => {
  const c = GnutlsCredentials.allocate();
  try {
    assert.ok(c.setSystemTrust() >= 0);
    assert.equal(c.setTrustFile("/nonexistent/ca.pem"), GNUTLS_E.FILE_ERROR);
    assert.equal(c.setCrlFile("/nonexistent/crl.pem"), GNUTLS_E.FILE_ERROR);
    assert.ok(c.setKeyFile("/nonexistent/c.pem", "/nonexistent/k.pem") < 0);
    assert.throws(() => c.setTrustFile("a\0b"), RangeError);
  } finally {
    c.free();
  }
  c.free(); // idempotent
  assert.throws(() => c.setSystemTrust(), /used after free/);
  const s = GnutlsSession.init(GNUTLS_INIT.CLIENT);
  try {
    assert.throws(() => s.setCredentials(c), /used after free/);
  } finally {
    s.deinit();
  }
});

Deno.test({
  name: "gnutls: loads the test PKI (CA, CRL, key pair)",
  ignore: !haveOpenssl() && !IN_CI,
  async fn() {
    const pki = await makePki();
    const c = GnutlsCredentials.allocate();
    try {
      assert.equal(c.setTrustFile(pki.ca), 1);
      assert.equal(c.setTrustFile(pki.otherCa), 1);
      assert.equal(c.setCrlFile(pki.crl), 1);
      assert.equal(c.setKeyFile(pki.client, pki.clientKey), 0);
      assert.equal(
        c.setKeyFile(pki.client, pki.serverKey),
        GNUTLS_E.CERTIFICATE_KEY_MISMATCH,
      );
      assert.ok(c.setKeyFile(pki.client, pki.garbage) < 0);
    } finally {
      c.free();
    }
  },
});

Deno.test("gnutls: a client session sends its ClientHello without blocking", () => {
  const [fd, peer] = socketpair();
  setNonblocking(fd, true);
  const c = GnutlsCredentials.allocate();
  const s = GnutlsSession.init(
    GNUTLS_INIT.CLIENT | GNUTLS_INIT.NONBLOCK | GNUTLS_INIT.NO_SIGNAL,
  );
  try {
    assert.equal(c.setSystemTrust() >= 0, true);
    assert.equal(s.setCredentials(c), 0);
    assert.equal(s.setDefaultPriority(), 0);
    // GnuTLS keeps the name's address: it lives in the session's own page.
    s.setVerifyCert("page-server.example");
    assert.throws(() => s.setVerifyCert(null), /only once/);
    s.setTransportFd(fd);
    assert.equal(s.recordCheckPending(), 0);
    assert.equal(s.handshake(), GNUTLS_E.AGAIN);
    assert.equal(s.recordGetDirection(), 0); // waiting to read
    assert.equal(s.handshake(), GNUTLS_E.AGAIN);
    const hello = new Uint8Array(16384);
    const n = readFd(peer, hello)!;
    // A TLS record of type handshake (22) holding a ClientHello (1).
    assert.equal(hello[0], 22);
    assert.equal(hello[1], 3);
    assert.equal(n, 5 + ((hello[3] << 8) | hello[4]));
    assert.equal(hello[5], 1);
    // Data before the handshake is refused, not sent.
    assert.ok(s.recordSend(new Uint8Array([1, 2, 3])) < 0);
    closeFd(peer);
    const r = s.handshake();
    assert.equal(r, GNUTLS_E.PREMATURE_TERMINATION);
    assert.equal(gnutlsErrorIsFatal(r), true);
  } finally {
    s.deinit();
    s.deinit(); // idempotent
    c.free();
    closeFd(fd);
  }
  assert.throws(() => s.handshake(), /used after deinit/);
  assert.throws(() => s.recordCheckPending(), /used after deinit/);
});
