/**
 * The TypeScript channel against tests/data/channel-vectors.json (shared with the
 * Python tests): key schedule, REPORT_DATA, sealed frames, rejection of bad frames,
 * and a complete recorded handshake with a real (test-PKI) DCAP quote.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { b64decode, fromHex, hex } from '../src/dcap/bytes';
import { verifyQuote } from '../src/dcap/verify';
import {
  deriveSessionKeys,
  DIR_B2K,
  DIR_K2B,
  ecdh,
  frameAad,
  frameNonce,
  openFrame,
  reportData,
  seal,
  transcriptHash
} from '../src/channel/crypto';
import { BrowserSession, parseEvidence } from '../src/channel/session';
import { readJson } from './util';

const file = readJson('channel-vectors.json');

function b64url(b: Uint8Array): string {
  return Buffer.from(b).toString('base64url');
}

/** Import a fixed P-256 key pair (test vectors only) from its private scalar. */
async function fixedKeyPair(dHex: string, pubHex: string): Promise<CryptoKeyPair> {
  const pub = fromHex(pubHex);
  const jwk = { kty: 'EC', crv: 'P-256', d: b64url(fromHex(dHex)), x: b64url(pub.slice(1, 33)), y: b64url(pub.slice(33)), ext: true };
  const privateKey = await crypto.subtle.importKey('jwk', jwk, { name: 'ECDH', namedCurve: 'P-256' }, false, ['deriveBits']);
  const publicKey = await crypto.subtle.importKey('raw', pub, { name: 'ECDH', namedCurve: 'P-256' }, true, []);
  return { privateKey, publicKey };
}

for (const v of file.vectors) {
  test(`channel vector ${v.name}: key schedule and frames`, async () => {
    const b = await fixedKeyPair(v.browser_private_d, v.browser_pub);
    const e = await fixedKeyPair(v.enclave_private_d, v.enclave_pub);
    const nonce = fromHex(v.nonce);
    const bpub = fromHex(v.browser_pub);
    const epub = fromHex(v.enclave_pub);
    assert.equal(hex(await reportData(nonce, bpub, epub)), v.report_data);
    const shared = await ecdh(b.privateKey, epub);
    assert.equal(hex(shared), v.shared_secret);
    assert.equal(hex(await ecdh(e.privateKey, bpub)), v.shared_secret);
    const th = await transcriptHash(nonce, bpub, epub, fromHex(v.quote));
    assert.equal(hex(th), v.transcript_hash);
    const keys = await deriveSessionKeys(shared, th, true);
    assert.equal(hex(keys.sessionId), v.session_id);
    assert.equal(hex(keys.raw!.b2kKey), v.b2k_key);
    assert.equal(hex(keys.raw!.k2bKey), v.k2b_key);
    assert.equal(hex(keys.b2k.iv), v.b2k_iv);
    assert.equal(hex(keys.k2b.iv), v.k2b_iv);
    for (const f of v.frames) {
      const dir = f.direction === 'b2k' ? DIR_B2K : DIR_K2B;
      const k = dir === DIR_B2K ? keys.b2k : keys.k2b;
      assert.equal(hex(frameNonce(k.iv, f.seq)), f.nonce);
      assert.equal(hex(frameAad(keys.sessionId, dir, f.seq)), f.aad);
      const ct = await seal(k, keys.sessionId, dir, f.seq, new TextEncoder().encode(f.plaintext));
      assert.equal(hex(ct), f.ciphertext);
      const pt = await openFrame(k, keys.sessionId, dir, f.seq, fromHex(f.ciphertext));
      assert.equal(new TextDecoder().decode(pt), f.plaintext);
    }
    for (const bad of v.bad_frames) {
      await assert.rejects(openFrame(keys.b2k, keys.sessionId, DIR_B2K, bad.seq, fromHex(bad.ciphertext)), bad.why);
    }
  });
}

test('recorded handshake: verify the quote, bind it, speak sealed frames', async () => {
  const h = file.handshake;
  const [hello, evidenceMsg, finished, ready, secret, result] = h.messages.map((m: any) => m.msg);
  const pub = b64decode(hello.browser_pub);
  const kp = await fixedKeyPair(h.browser_private_d, hex(pub));
  const session = await BrowserSession.create(kp, b64decode(hello.nonce));
  assert.deepEqual(session.hello(), hello);

  const evidence = parseEvidence(evidenceMsg);
  const root = fromHex(h.root_der);
  await assert.rejects(verifyQuote(evidence.quote, evidence.collateral!, { now: h.verify_at }), 'Intel root must not accept the test PKI');
  const report = await verifyQuote(evidence.quote, evidence.collateral!, { now: h.verify_at, rootDer: root });
  assert.equal(report.status, h.expected_status);
  assert.equal(report.intelRoot, false);

  await session.bind(evidence, report.quote.report.reportData);
  assert.equal(hex(session.keys!.sessionId), h.session_id);
  // The browser's first frame is byte-identical to the recorded one (deterministic AEAD).
  assert.deepEqual(await session.seal({ type: 'finished', verdict: { status: 'UpToDate', advisory_ids: [] } }), finished);
  assert.deepEqual(await session.open(ready), { type: 'ready', session_id: h.session_id });
  assert.deepEqual(await session.seal({ type: 'secret', request_id: null, name: 'db_password', value: 'hunter2' }), secret);
  assert.equal((await session.open(result)).ok, true);
});

test('handshake: a substituted enclave key or nonce breaks the binding', async () => {
  const h = file.handshake;
  const [hello, evidenceMsg] = h.messages.map((m: any) => m.msg);
  const evidence = parseEvidence(evidenceMsg);
  const report = await verifyQuote(evidence.quote, evidence.collateral!, { now: h.verify_at, rootDer: fromHex(h.root_der) });
  // Attacker's own key in place of the enclave's: REPORT_DATA no longer matches.
  const other = await BrowserSession.create();
  const swapped = { ...evidence, enclavePub: other.browserPub };
  const kp = await fixedKeyPair(h.browser_private_d, hex(b64decode(hello.browser_pub)));
  const s1 = await BrowserSession.create(kp, b64decode(hello.nonce));
  await assert.rejects(s1.bind(swapped, report.quote.report.reportData), /REPORT_DATA/);
  // A replayed quote answering another browser's nonce.
  const s2 = await BrowserSession.create(kp);
  await assert.rejects(s2.bind(evidence, report.quote.report.reportData), /REPORT_DATA/);
});

test('browser session rejects replayed, reordered and tampered kernel frames', async () => {
  const h = file.handshake;
  const [hello, evidenceMsg, , ready, , result] = h.messages.map((m: any) => m.msg);
  const kp = await fixedKeyPair(h.browser_private_d, hex(b64decode(hello.browser_pub)));
  const session = await BrowserSession.create(kp, b64decode(hello.nonce));
  const evidence = parseEvidence(evidenceMsg);
  const report = await verifyQuote(evidence.quote, evidence.collateral!, { now: h.verify_at, rootDer: fromHex(h.root_der) });
  await session.bind(evidence, report.quote.report.reportData);
  await assert.rejects(session.open(result), /expected 0/); // reordered: seq 1 first
  const tampered = { ...ready, ct: ready.ct.replace(/^./, ready.ct[0] === 'A' ? 'B' : 'A') };
  await assert.rejects(session.open(tampered), /authentication/);
  assert.equal((await session.open(ready)).type, 'ready'); // state unchanged by the failures
  await assert.rejects(session.open(ready), /expected 1/); // replayed
  assert.equal((await session.open(result)).type, 'secret_result');
});
