/**
 * The TypeScript channel against tests/data/channel-vectors.json (written by the Python
 * side, tests/tools/make_channel_vectors.py): owners digest, REPORT_DATA, transcript,
 * keys of all seven streams, owner proof and grant signatures, sealed attestation frames,
 * sealed notebook messages (byte-identical both ways), bad frames, and a complete
 * recorded handshake with a real (test-PKI) DCAP quote.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { b64decode, b64encode, fromHex, hex } from '../src/dcap/bytes';
import { verifyQuote } from '../src/dcap/verify';
import {
  deriveSessionKeys,
  ecdh,
  frameAad,
  frameNonce,
  openFrame,
  ownerGrantMessage,
  ownerProofMessage,
  ownersDigest,
  PROTOCOL,
  reportData,
  seal,
  STREAM_NAMES,
  StreamName,
  STREAMS,
  transcriptHash,
  verifySignature
} from '../src/channel/crypto';
import { Envelope, WireMessage } from '../src/channel/envelope';
import { BrowserSession, OwnerKey, parseEvidence } from '../src/channel/session';
import { readJson } from './util';

const file = readJson('channel-vectors.json');

function b64url(b: Uint8Array): string {
  return Buffer.from(b).toString('base64url');
}

/** Import a fixed P-256 key pair (test vectors only) from its private scalar. */
async function fixedKeyPair(dHex: string, pubHex: string, alg: 'ECDH' | 'ECDSA' = 'ECDH'): Promise<CryptoKeyPair> {
  const pub = fromHex(pubHex);
  const jwk = { kty: 'EC', crv: 'P-256', d: b64url(fromHex(dHex)), x: b64url(pub.slice(1, 33)), y: b64url(pub.slice(33)), ext: true };
  const usages: KeyUsage[] = alg === 'ECDH' ? ['deriveBits'] : ['sign'];
  const privateKey = await crypto.subtle.importKey('jwk', jwk, { name: alg, namedCurve: 'P-256' }, false, usages);
  const publicKey = await crypto.subtle.importKey('raw', pub, { name: alg, namedCurve: 'P-256' }, true, alg === 'ECDH' ? [] : ['verify']);
  return { privateKey, publicKey };
}

async function fixedOwner(dHex: string, pubHex: string): Promise<OwnerKey> {
  return { privateKey: (await fixedKeyPair(dHex, pubHex, 'ECDSA')).privateKey, pub: fromHex(pubHex) };
}

test('the vectors are ppml-attest/2', () => {
  assert.equal(file.protocol, PROTOCOL);
});

for (const v of file.vectors) {
  test(`channel vector ${v.name}: owners digest, binding, keys of every stream, signatures, frames`, async () => {
    const b = await fixedKeyPair(v.browser_private_d, v.browser_pub);
    const e = await fixedKeyPair(v.enclave_private_d, v.enclave_pub);
    const nonce = fromHex(v.nonce);
    const bpub = fromHex(v.browser_pub);
    const epub = fromHex(v.enclave_pub);
    const opub = fromHex(v.owner_pub);
    const d = await ownersDigest(v.owners.map((o: string) => fromHex(o)));
    assert.equal(hex(d), v.owners_digest);
    assert.equal(hex(await reportData(nonce, bpub, epub, opub, d)), v.report_data);
    const shared = await ecdh(b.privateKey, epub);
    assert.equal(hex(shared), v.shared_secret);
    assert.equal(hex(await ecdh(e.privateKey, bpub)), v.shared_secret);
    const th = await transcriptHash(nonce, bpub, epub, opub, d, fromHex(v.quote));
    assert.equal(hex(th), v.transcript_hash);
    const keys = await deriveSessionKeys(shared, th, true);
    assert.equal(hex(keys.sessionId), v.session_id);
    for (const s of STREAM_NAMES) {
      assert.equal(hex(keys.raw![s]), v.stream_keys[s].key, `${s} key`);
      assert.equal(hex(keys.streams[s].iv), v.stream_keys[s].iv, `${s} iv`);
    }
    // Owner proof and grant: same message bytes; Python's signature verifies here, and ours there
    // (ECDSA is randomised, so signatures are compared by verifying, not by bytes).
    assert.equal(hex(ownerProofMessage(th)), v.owner_proof_message);
    assert.ok(await verifySignature(opub, fromHex(v.owner_sig), ownerProofMessage(th)));
    const grantPub = fromHex(v.grant.new_owner_pub);
    assert.equal(hex(ownerGrantMessage(keys.sessionId, grantPub)), v.grant.message);
    assert.ok(await verifySignature(opub, fromHex(v.grant.sig), fromHex(v.grant.message)));
    assert.equal(await verifySignature(opub, fromHex(v.grant.sig), ownerProofMessage(th)), false);

    for (const f of v.frames) {
      const stream = f.direction === 'b2k' ? STREAMS.b2k : STREAMS.k2b;
      const k = keys.streams[f.direction as StreamName];
      assert.equal(hex(frameNonce(k.iv, f.seq)), f.nonce);
      assert.equal(hex(frameAad(keys.sessionId, stream, f.seq)), f.aad);
      const ct = await seal(k, keys.sessionId, stream, f.seq, new TextEncoder().encode(f.plaintext));
      assert.equal(hex(ct), f.ciphertext);
      const pt = await openFrame(k, keys.sessionId, stream, f.seq, fromHex(f.ciphertext));
      assert.equal(new TextDecoder().decode(pt), f.plaintext);
    }
    for (const bad of v.bad_frames) {
      await assert.rejects(openFrame(keys.streams.b2k, keys.sessionId, STREAMS.b2k, bad.seq, fromHex(bad.ciphertext)), bad.why);
    }

    // Sealed notebook messages: browser -> kernel byte-identical, kernel -> browser opened.
    const env = new Envelope(keys);
    for (const m of v.messages) {
      const msg: WireMessage = {
        channel: m.channel,
        header: m.header,
        parent_header: m.parent_header,
        content: m.content,
        metadata: m.metadata ?? {},
        buffers: m.buffers.map((x: string) => fromHex(x))
      };
      if (m.stream.startsWith('b2k')) {
        const sealed = await env.seal(msg);
        assert.deepEqual(sealed.content, m.sealed_content, m.stream);
        const ct = sealed.buffers![0] as DataView;
        assert.equal(hex(new Uint8Array(ct.buffer, ct.byteOffset, ct.byteLength)), m.ciphertext, `${m.stream} ${m.header.msg_type}`);
        const pt = await openFrame(keys.streams[m.stream as StreamName], keys.sessionId, STREAMS[m.stream as StreamName], m.sealed_content.ppml_sealed.seq, fromHex(m.ciphertext));
        assert.equal(hex(pt), m.plaintext);
      } else {
        const wire = { ...msg, content: m.sealed_content, metadata: {}, buffers: [fromHex(m.ciphertext)] };
        const opened = await env.open(wire);
        assert.equal(opened.kind, 'opened', m.stream);
        const o = (opened as { msg: WireMessage }).msg;
        assert.deepEqual(o.content, m.content);
        assert.deepEqual(
          (o.buffers ?? []).map(x => hex(new Uint8Array((x as DataView).buffer, (x as DataView).byteOffset, (x as DataView).byteLength))),
          m.buffers
        );
        // The same bytes cannot be opened again (replay), nor under another message id.
        await assert.rejects(env.open(wire), /replay|expected/);
      }
    }
  });
}

test('recorded handshake: verify the quote, bind it, prove the owner key, speak sealed frames', async () => {
  const h = file.handshake;
  const [hello, evidenceMsg, finished, ready, secret, result] = h.messages.map((m: any) => m.msg);
  const bpub = b64decode(hello.browser_pub);
  const kp = await fixedKeyPair(h.browser_private_d, hex(bpub));
  const owner = await fixedOwner(h.owner_private_d, hex(b64decode(hello.owner_pub)));
  const session = await BrowserSession.create(owner, kp, b64decode(hello.nonce));
  assert.deepEqual(session.hello(), hello);

  const evidence = parseEvidence(evidenceMsg);
  const root = fromHex(h.root_der);
  await assert.rejects(verifyQuote(evidence.quote, evidence.collateral!, { now: h.verify_at }), 'Intel root must not accept the test PKI');
  const report = await verifyQuote(evidence.quote, evidence.collateral!, { now: h.verify_at, rootDer: root });
  assert.equal(report.status, h.expected_status);
  assert.equal(report.intelRoot, false);

  await session.bind(evidence, report.quote.report.reportData, true);
  assert.equal(hex(session.keys!.sessionId), h.session_id);
  // The recorded finished opens with our keys, carries a valid owner proof, and re-sealing
  // the same inner message gives the same bytes (deterministic AEAD).
  const inner = JSON.parse(
    new TextDecoder().decode(await openFrame(session.keys!.streams.b2k, session.keys!.sessionId, STREAMS.b2k, 0, b64decode(finished.ct)))
  );
  assert.equal(inner.type, 'finished');
  assert.ok(await verifySignature(owner.pub, b64decode(inner.owner_sig), ownerProofMessage(session.keys!.transcriptHash)));
  assert.ok(await verifySignature(owner.pub, await session.ownerSignature(), ownerProofMessage(session.keys!.transcriptHash)));
  assert.deepEqual(await session.seal(inner), finished);
  assert.equal((await session.open(ready)).type, 'ready');
  assert.deepEqual(await session.seal({ type: 'secret', request_id: null, name: 'db_password', value: 'hunter2' }), secret);
  assert.equal((await session.open(result)).ok, true);
});

test('recorded handshake: substituted enclave key, owner list or nonce break the binding', async () => {
  const h = file.handshake;
  const [hello, evidenceMsg] = h.messages.map((m: any) => m.msg);
  const evidence = parseEvidence(evidenceMsg);
  const report = await verifyQuote(evidence.quote, evidence.collateral!, { now: h.verify_at, rootDer: fromHex(h.root_der) });
  const kp = await fixedKeyPair(h.browser_private_d, hex(b64decode(hello.browser_pub)));
  const owner = await fixedOwner(h.owner_private_d, hex(b64decode(hello.owner_pub)));
  const rd = report.quote.report.reportData;
  const s1 = await BrowserSession.create(owner, kp, b64decode(hello.nonce));
  await assert.rejects(s1.bind({ ...evidence, enclavePub: s1.browserPub }, rd), /REPORT_DATA/);
  // A relay adds an owner (or removes one) in transit.
  await assert.rejects(s1.bind({ ...evidence, owners: [owner.pub] }, rd), /REPORT_DATA/);
  // Another browser's hello (other owner key) with this quote.
  const other = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']);
  const s2 = await BrowserSession.create(
    { privateKey: other.privateKey, pub: new Uint8Array(await crypto.subtle.exportKey('raw', other.publicKey)) },
    kp,
    b64decode(hello.nonce)
  );
  await assert.rejects(s2.bind(evidence, rd), /REPORT_DATA/);
  const s3 = await BrowserSession.create(owner, kp);
  await assert.rejects(s3.bind(evidence, rd), /REPORT_DATA/);
  assert.equal(b64encode(s1.owner.pub), hello.owner_pub);
});
