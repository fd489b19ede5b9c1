/**
 * The TypeScript ppml-attest/2 channel: key schedule, REPORT_DATA with the owners digest,
 * owner proof, sealed attestation frames and sealed notebook messages, and every attack
 * the relay can mount on them (replay, reorder, tamper, moved bodies, foreign sessions,
 * stream confusion, owner substitution). A rejected frame never changes state.
 *
 * The shared vectors (tests/data/channel-vectors.json, written by the Python side) are
 * checked in channel-vectors.test.ts.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { b64decode, b64encode, hex } from '../src/dcap/bytes';
import {
  deriveSessionKeys,
  ecdh,
  exportPublic,
  fingerprint,
  generateKeyPair,
  generateOwnerKey,
  openFrame,
  ownerGrantMessage,
  ownerProofMessage,
  ownersDigest,
  reportData,
  seal,
  SessionKeys,
  STREAMS,
  transcriptHash,
  verifySignature
} from '../src/channel/crypto';
import { decodePlaintext, encodePlaintext, Envelope, mustSeal, WireMessage } from '../src/channel/envelope';
import { BrowserSession, Evidence, OwnerKey } from '../src/channel/session';

async function ownerKey(): Promise<OwnerKey> {
  const kp = await generateOwnerKey();
  return { privateKey: kp.privateKey, pub: await exportPublic(kp.publicKey) };
}

/** A stand-in kernel: what the enclave computes for a hello (no real quote needed here). */
class FakeKernel {
  keys!: SessionKeys;
  sendSeq = 0;
  private constructor(
    readonly kp: CryptoKeyPair,
    readonly pub: Uint8Array
  ) {}

  static async create(): Promise<FakeKernel> {
    const kp = await generateKeyPair();
    return new FakeKernel(kp, await exportPublic(kp.publicKey));
  }

  /** Evidence and the REPORT_DATA the (verified) quote would carry. */
  async answer(hello: Record<string, any>, owners: Uint8Array[]): Promise<{ evidence: Evidence; rd: Uint8Array }> {
    const nonce = b64decode(hello.nonce);
    const bpub = b64decode(hello.browser_pub);
    const opub = b64decode(hello.owner_pub);
    const d = await ownersDigest(owners);
    const rd = await reportData(nonce, bpub, this.pub, opub, d);
    const quote = new TextEncoder().encode('quote bytes for ' + hex(rd));
    const th = await transcriptHash(nonce, bpub, this.pub, opub, d, quote);
    this.keys = await deriveSessionKeys(await ecdh(this.kp.privateKey, bpub), th);
    const evidence: Evidence = { enclavePub: this.pub, owners, quote, collateral: null, tee: {}, kernel: {}, timings: {} };
    return { evidence, rd };
  }

  async sealK2b(inner: Record<string, unknown>, seq = this.sendSeq++): Promise<Record<string, unknown>> {
    const ct = await seal(this.keys.streams.k2b, this.keys.sessionId, STREAMS.k2b, seq, new TextEncoder().encode(JSON.stringify(inner)));
    return { type: 'sealed', seq, ct: b64encode(ct) };
  }

  async openB2k(frame: Record<string, any>): Promise<Record<string, any>> {
    const pt = await openFrame(this.keys.streams.b2k, this.keys.sessionId, STREAMS.b2k, frame.seq, b64decode(frame.ct));
    return JSON.parse(new TextDecoder().decode(pt));
  }

  /** The kernel side of a sealed notebook message (k2b stream of `channel`). */
  async sealMsg(channel: 'shell' | 'iopub' | 'stdin', seq: number, msg: WireMessage, body?: Record<string, unknown>): Promise<WireMessage> {
    const stream = ({ shell: 'k2b shell', iopub: 'k2b iopub', stdin: 'k2b stdin' } as const)[channel];
    const json = body ?? {
      msg_id: msg.header.msg_id,
      msg_type: msg.header.msg_type,
      parent_msg_id: (msg.parent_header as any).msg_id,
      content: msg.content,
      metadata: msg.metadata
    };
    const pt = encodePlaintext(new TextEncoder().encode(JSON.stringify(json)), []);
    const ct = await seal(this.keys.streams[stream], this.keys.sessionId, STREAMS[stream], seq, pt);
    return { ...msg, channel, content: { ppml_sealed: { v: 2, sid: hex(this.keys.sessionId), seq } }, metadata: {}, buffers: [ct] };
  }
}

async function handshake(owners: 'none' | 'me' | 'other' = 'none') {
  const me = await ownerKey();
  const session = await BrowserSession.create(me);
  const kernel = await FakeKernel.create();
  const list = owners === 'none' ? [] : owners === 'me' ? [me.pub] : [(await ownerKey()).pub];
  const { evidence, rd } = await kernel.answer(session.hello(), list);
  return { me, session, kernel, evidence, rd };
}

test('owners digest: zeros without owner, order matters, bad keys refused', async () => {
  assert.equal(hex(await ownersDigest([])), '00'.repeat(32));
  const a = (await ownerKey()).pub;
  const b = (await ownerKey()).pub;
  assert.notEqual(hex(await ownersDigest([a, b])), hex(await ownersDigest([b, a])));
  await assert.rejects(ownersDigest([a.slice(1)]), /65-byte/);
});

test('handshake: finished carries a valid owner proof over the transcript', async () => {
  const { me, session, kernel, evidence, rd } = await handshake();
  assert.equal(session.hello().protocol, 'ppml-attest/2');
  assert.equal(session.hello().owner_pub, b64encode(me.pub));
  await session.bind(evidence, rd);
  assert.equal(session.unowned, true);
  assert.equal(hex(session.keys!.sessionId), hex(kernel.keys.sessionId));
  const fin = await kernel.openB2k(await session.finished({ status: 'UpToDate' }));
  assert.equal(fin.type, 'finished');
  const sig = b64decode(fin.owner_sig);
  assert.equal(sig.length, 64);
  assert.ok(await verifySignature(me.pub, sig, ownerProofMessage(kernel.keys.transcriptHash)));
  // The signature is over this transcript only.
  assert.equal(await verifySignature(me.pub, sig, ownerProofMessage(new Uint8Array(32))), false);
});

test('handshake: an owner list that lacks this browser is refused (another party controls the kernel)', async () => {
  const { session, evidence, rd } = await handshake('other');
  await assert.rejects(session.bind(evidence, rd), /another party controls this kernel/);
  assert.equal(session.keys, null, 'no keys derived after a refusal');
  await assert.rejects(session.seal({ type: 'secret' }), /not established/);
});

test('handshake: an owner list containing this browser is accepted', async () => {
  const { session, evidence, rd } = await handshake('me');
  await session.bind(evidence, rd);
  assert.equal(session.unowned, false);
});

test('handshake: a relay that strips or replaces the owner list or the enclave key breaks the binding', async () => {
  const { session, evidence, rd } = await handshake('other');
  // Relay removes the owner (to make the kernel look unowned): REPORT_DATA no longer matches.
  await assert.rejects(session.bind({ ...evidence, owners: [] }, rd), /REPORT_DATA/);
  const mine = await handshake('me');
  await assert.rejects(mine.session.bind({ ...mine.evidence, enclavePub: mine.session.browserPub }, mine.rd), /REPORT_DATA/);
  // A quote answering another browser's hello (other nonce, same owner).
  const other = await BrowserSession.create(mine.me);
  await assert.rejects(other.bind(mine.evidence, mine.rd), /REPORT_DATA/);
  assert.equal(session.keys, null);
});

test('attestation frames: replay, reorder, tamper and invalid inner messages change no state', async () => {
  const { session, kernel, evidence, rd } = await handshake();
  await session.bind(evidence, rd);
  const sid = hex(session.keys!.sessionId);
  const sealedMode = { on: false, required: false, reason: 'teaching kernel' };
  const ready = await kernel.sealK2b({ type: 'ready', session_id: sid, owners: [], claimed: true, sealed_mode: sealedMode }, 0);
  const mode = await kernel.sealK2b({ type: 'mode', sealed_mode: { on: true, required: false, reason: 'secret' } }, 1);
  await assert.rejects(session.open(mode), /expected 0/); // reordered
  const tampered = { ...ready, ct: String(ready.ct).replace(/^./, String(ready.ct)[0] === 'A' ? 'B' : 'A') };
  await assert.rejects(session.open(tampered), /authentication/);
  // A frame that decrypts but is not valid (a 'mode' first, a bad name) does not consume seq 0.
  await assert.rejects(session.open(await kernel.sealK2b({ type: 'mode', sealed_mode: sealedMode }, 0)), /ready/);
  await assert.rejects(session.open(await kernel.sealK2b({ type: 'ready', session_id: 'ff'.repeat(16), owners: [], sealed_mode: sealedMode }, 0)), /another session/);
  assert.equal((await session.open(ready)).type, 'ready');
  await assert.rejects(session.open(ready), /expected 1/); // replayed
  await assert.rejects(session.open(await kernel.sealK2b({ type: 'secret_request', request_id: 'r1', name: 'bad name' }, 1)), /invalid/);
  await assert.rejects(session.open(await kernel.sealK2b({ type: 'ready', session_id: sid, owners: [], sealed_mode: sealedMode }, 1)), /second/);
  assert.equal((await session.open(mode)).type, 'mode');
});

test('owner grant: signed over session id and the new key', async () => {
  const { me, session, kernel, evidence, rd } = await handshake();
  await session.bind(evidence, rd);
  const other = (await ownerKey()).pub;
  await session.finished({});
  const frame = await kernel.openB2k(await session.grant(other, 'laptop 2'));
  assert.equal(frame.type, 'owner_grant');
  assert.equal(frame.owner_pub, b64encode(other));
  assert.ok(await verifySignature(me.pub, b64decode(frame.sig), ownerGrantMessage(kernel.keys.sessionId, other)));
  await assert.rejects(session.grant(other, ''), /label/);
  assert.match(await fingerprint(other), /^[0-9a-f]{4} [0-9a-f]{4} [0-9a-f]{4} [0-9a-f]{4}$/);
});

function request(msgType: string, channel = 'shell', content: Record<string, unknown> = {}, buffers: Uint8Array[] = []): WireMessage {
  return {
    channel,
    header: { msg_id: `id-${Math.random()}`, msg_type: msgType, session: 's', username: 'u', date: '', version: '5.3' },
    parent_header: {},
    content,
    metadata: { cellId: 'c1' },
    buffers
  };
}

function reply(parent: WireMessage, msgType: string, channel: string, content: Record<string, unknown>): WireMessage {
  return {
    channel,
    header: { msg_id: `k-${Math.random()}`, msg_type: msgType, session: 'kernel', username: 'k', date: '', version: '5.3' },
    parent_header: parent.header,
    content,
    metadata: {}
  };
}

test('which messages are sealed', () => {
  for (const t of ['execute_request', 'complete_request', 'inspect_request', 'history_request', 'is_complete_request', 'comm_info_request', 'comm_open', 'comm_msg', 'comm_close']) {
    assert.ok(mustSeal(request(t)), t);
  }
  assert.ok(mustSeal(request('input_reply', 'stdin')));
  for (const t of ['kernel_info_request', 'shutdown_request', 'interrupt_request']) {
    assert.equal(mustSeal(request(t)), false, t);
  }
  assert.equal(mustSeal(request('comm_open', 'control')), false);
});

test('notebook envelope: the kernel opens what the browser seals (content, metadata, buffers; per stream)', async () => {
  const { session, kernel, evidence, rd } = await handshake();
  await session.bind(evidence, rd);
  const env = new Envelope(session.keys!);
  const code = 'print("distinctive-code-7f3a")';
  const req = request('execute_request', 'shell', { code }, [new Uint8Array([1, 2, 3])]);
  const sealed = await env.seal(req);
  assert.deepEqual(sealed.content, { ppml_sealed: { v: 2, sid: hex(kernel.keys.sessionId), seq: 0 } });
  assert.deepEqual(sealed.metadata, {});
  assert.equal(sealed.header, req.header);
  assert.equal(JSON.stringify(sealed).includes('distinctive'), false);
  const ct = new Uint8Array((sealed.buffers![0] as DataView).buffer);
  const pt = await openFrame(kernel.keys.streams['b2k shell'], kernel.keys.sessionId, STREAMS['b2k shell'], 0, ct);
  const { json, buffers } = decodePlaintext(pt);
  assert.deepEqual(JSON.parse(new TextDecoder().decode(json)), { msg_id: req.header.msg_id, msg_type: 'execute_request', content: { code }, metadata: { cellId: 'c1' } });
  assert.deepEqual([...buffers[0]], [1, 2, 3]);
  // Streams count separately: the first input_reply is stdin #0, the next shell request #1.
  assert.equal(((await env.seal(request("input_reply", "stdin", { value: "x" }))).content as any).ppml_sealed.seq, 0);
  assert.equal(((await env.seal(request('complete_request'))).content as any).ppml_sealed.seq, 1);
  // A sealed message in the shell stream cannot be opened as stdin.
  await assert.rejects(openFrame(kernel.keys.streams['b2k stdin'], kernel.keys.sessionId, STREAMS['b2k stdin'], 0, ct), /authentication/);
});

test('notebook envelope: replayed, reordered, tampered, moved, cross-stream and foreign messages', async () => {
  const { session, kernel, evidence, rd } = await handshake();
  await session.bind(evidence, rd);
  const env = new Envelope(session.keys!);
  const req = request('execute_request', 'shell', { code: '1' });
  const out0 = await kernel.sealMsg('iopub', 0, reply(req, 'stream', 'iopub', { name: 'stdout', text: 'secret-derived 42\n' }));
  const out1 = await kernel.sealMsg('iopub', 1, reply(req, 'execute_result', 'iopub', { data: { 'text/plain': '42' }, metadata: {}, execution_count: 1 }));
  const rep0 = await kernel.sealMsg('shell', 0, reply(req, 'execute_reply', 'shell', { status: 'ok', execution_count: 1 }));

  await assert.rejects(env.open(out1), /expected 0/); // reordered
  const flipped = new Uint8Array(out0.buffers![0] as Uint8Array);
  flipped[3] ^= 1;
  await assert.rejects(env.open({ ...out0, buffers: [flipped] }), /authentication/); // tampered
  await assert.rejects(env.open({ ...out0, channel: 'shell' }), /authentication/); // moved to another channel/stream
  await assert.rejects(env.open({ ...out0, header: { ...out0.header, msg_type: 'error' } }), /another message/); // body moved
  await assert.rejects(env.open({ ...out0, parent_header: { msg_id: 'other' } }), /another message/); // re-parented
  await assert.rejects(env.open({ ...out0, buffers: [] }), /exactly one buffer/);
  await assert.rejects(env.open({ ...out0, content: { ppml_sealed: { v: 1, sid: 'x', seq: 0 } } }), /malformed/);
  await assert.rejects(env.open({ ...out0, channel: 'control' }), /channel/);
  // Another tab's session: ignored, no state change.
  assert.equal((await env.open({ ...out0, content: { ppml_sealed: { v: 2, sid: 'ab'.repeat(16), seq: 0 } } })).kind, 'foreign');
  assert.equal((await env.open(reply(req, 'status', 'iopub', { execution_state: 'idle' }))).kind, 'clear');

  const opened = await env.open(out0);
  assert.equal(opened.kind, 'opened');
  assert.deepEqual((opened as any).msg.content, { name: 'stdout', text: 'secret-derived 42\n' });
  await assert.rejects(env.open(out0), /expected 1/); // replayed
  assert.equal((await env.open(rep0)).kind, 'opened'); // shell has its own counter
  assert.equal((await env.open(out1)).kind, 'opened');
});

test('notebook envelope: a sealed body that decrypts but is invalid does not consume its number', async () => {
  const { session, kernel, evidence, rd } = await handshake();
  await session.bind(evidence, rd);
  const env = new Envelope(session.keys!);
  const req = request('execute_request');
  const msg = reply(req, 'stream', 'iopub', { name: 'stdout', text: 'x' });
  const badBody = await kernel.sealMsg('iopub', 0, msg, { msg_id: msg.header.msg_id, msg_type: 'stream', parent_msg_id: req.header.msg_id, content: 'not an object' });
  await assert.rejects(env.open(badBody), /not an object/);
  assert.equal((await env.open(await kernel.sealMsg('iopub', 0, msg))).kind, 'opened');
});

test('plaintext layout: lp(JSON) || lp(buffers), strict', () => {
  const pt = encodePlaintext(new Uint8Array([123, 125]), [new Uint8Array([9]), new Uint8Array()]);
  assert.deepEqual([...pt], [0, 0, 0, 2, 123, 125, 0, 0, 0, 1, 9, 0, 0, 0, 0]);
  const d = decodePlaintext(pt);
  assert.equal(d.buffers.length, 2);
  assert.throws(() => decodePlaintext(pt.slice(0, pt.length - 1)), /truncated/);
  assert.throws(() => decodePlaintext(new Uint8Array([0, 0, 0])), /truncated/);
  assert.throws(() => decodePlaintext(new Uint8Array()), /empty/);
});
