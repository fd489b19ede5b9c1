/**
 * The sealing gate of a kernel connection (src/sealing.ts) on a stand-in connection with
 * the same private methods JupyterLab's KernelConnection has: what is held, sealed,
 * refused locally, opened, ignored and dropped. Each attack here fails without its defence.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { hex } from '../src/dcap/bytes';
import { deriveSessionKeys, seal, STREAMS } from '../src/channel/crypto';
import { encodePlaintext, Envelope } from '../src/channel/envelope';
import { SealingGate, UNAUTHENTICATED_REFUSAL } from '../src/sealing';

class FakeConnection {
  sent: any[] = [];
  handled: any[] = [];
  _msgChain: Promise<void> = Promise.resolve();
  _kernelSession = 'kernel-session';
  _ws = null;
  clientId = 'client';
  username = 'user';
  isDisposed = false;
  id = 'kernel-1';
  _anyMessage = { emit: () => undefined };
  serverSettings = { serializer: { deserialize: (d: any) => d } };
  _sendMessage(msg: any): void {
    this.sent.push(msg);
  }
  async _handleMessage(msg: any): Promise<void> {
    this.handled.push(msg);
  }
  _onWSMessage(): void {
    // replaced by the gate
  }
}

async function keys() {
  return deriveSessionKeys(crypto.getRandomValues(new Uint8Array(32)), crypto.getRandomValues(new Uint8Array(32)));
}

let n = 0;
function msg(channel: string, msgType: string, content: any = {}, parent: any = {}): any {
  n += 1;
  return {
    channel,
    header: { msg_id: `m${n}`, msg_type: msgType, session: 'kernel-session', username: 'u', date: '', version: '5.3' },
    parent_header: parent,
    content,
    metadata: {},
    buffers: []
  };
}

const settle = () => new Promise(r => setTimeout(r, 150));

async function kernelSeal(k: Awaited<ReturnType<typeof keys>>, m: any, seq: number): Promise<any> {
  const stream = ({ shell: 'k2b shell', iopub: 'k2b iopub', stdin: 'k2b stdin' } as const)[m.channel as 'shell'];
  const json = { msg_id: m.header.msg_id, msg_type: m.header.msg_type, parent_msg_id: m.parent_header.msg_id, content: m.content, metadata: {} };
  const ct = await seal(k.streams[stream], k.sessionId, STREAMS[stream], seq, encodePlaintext(new TextEncoder().encode(JSON.stringify(json)), []));
  return { ...m, content: { ppml_sealed: { v: 2, sid: hex(k.sessionId), seq } }, buffers: [ct] };
}

test('before the kernel is known to be PPML or verified, requests are held, never sent in the clear', async () => {
  const kc = new FakeConnection();
  const gate = SealingGate.install(kc);
  (kc as any)._sendMessage(msg('shell', 'execute_request', { code: 'secret()' }));
  (kc as any)._sendMessage(msg('shell', 'kernel_info_request'));
  (kc as any)._sendMessage(msg('stdin', 'input_reply', { value: 'answer' }));
  assert.deepEqual(kc.sent.map(m => m.header.msg_type), ['kernel_info_request']);
  gate.hold();
  (kc as any)._sendMessage(msg('shell', 'complete_request', { code: 'sec' }));
  assert.equal(kc.sent.length, 1);
  // Verified: the held messages leave sealed, in order.
  gate.ready(new Envelope(await keys()));
  await settle();
  assert.deepEqual(kc.sent.map(m => m.header.msg_type), ['kernel_info_request', 'execute_request', 'input_reply', 'complete_request']);
  for (const m of kc.sent.slice(1)) {
    assert.ok(m.content.ppml_sealed, `${m.header.msg_type} sealed`);
    assert.equal(JSON.stringify(m).includes('secret()') || JSON.stringify(m).includes('answer'), false);
  }
  assert.deepEqual(kc.sent.slice(1).map(m => m.content.ppml_sealed.seq), [0, 0, 1]); // shell, stdin, shell
});

test('a failed verification never sends held or later requests; they fail locally with the reason', async () => {
  const kc = new FakeConnection();
  const gate = SealingGate.install(kc);
  gate.hold();
  const req = msg('shell', 'execute_request', { code: 'x' });
  (kc as any)._sendMessage(req);
  gate.fail('policy mismatch: MRENCLAVE bbbbbbbb');
  (kc as any)._sendMessage(msg('shell', 'inspect_request', { code: 'x' }));
  await settle();
  assert.equal(kc.sent.length, 0);
  const types = kc.handled.map(m => `${m.channel}:${m.header.msg_type}`);
  assert.deepEqual(types, ['iopub:error', 'shell:execute_reply', 'iopub:status', 'shell:inspect_reply', 'iopub:status']);
  assert.match(kc.handled[0].content.evalue, /nothing was sent to the kernel: policy mismatch/);
  assert.equal(kc.handled[0].parent_header.msg_id, req.header.msg_id);
});

test('a plain (non-PPML) kernel: everything passes unchanged', async () => {
  const kc = new FakeConnection();
  const gate = SealingGate.install(kc);
  (kc as any)._sendMessage(msg('shell', 'execute_request', { code: '1' }));
  gate.plain();
  const out = msg('iopub', 'stream', { name: 'stdout', text: '1' });
  await (kc as any)._handleMessage(out);
  assert.equal(kc.sent[0].content.code, '1');
  assert.equal(kc.handled[0], out);
});

test('incoming on a verified connection: own sealed opened, foreign ignored, relay-forged clear output dropped', async () => {
  const kc = new FakeConnection();
  const gate = SealingGate.install(kc);
  const k = await keys();
  gate.ready(new Envelope(k));
  const req = msg('shell', 'execute_request', { code: '1' });
  (kc as any)._sendMessage(req);
  await settle();
  const h = (m: any) => (kc as any)._handleMessage(m);
  // The relay injects clear output for our request: never shown.
  await h(msg('iopub', 'stream', { name: 'stdout', text: 'forged' }, req.header));
  await h(msg('iopub', 'execute_result', { data: { 'text/plain': 'forged' }, metadata: {}, execution_count: 1 }, req.header));
  await h(msg('iopub', 'comm_open', { comm_id: 'c', target_name: 'jupyter.widget', data: {} }, req.header));
  assert.equal(kc.handled.length, 0);
  // Status passes in the clear (activity tracking).
  await h(msg('iopub', 'status', { execution_state: 'busy' }, req.header));
  assert.equal(kc.handled.length, 1);
  // Another tab's sealed output: ignored.
  const other = await keys();
  await h(await kernelSeal(other, msg('iopub', 'stream', { name: 'stdout', text: 'theirs' }, req.header), 0));
  assert.equal(kc.handled.length, 1);
  assert.equal(gate.counts.foreign, 1);
  // Ours: opened and handed to JupyterLab.
  const real = msg('iopub', 'stream', { name: 'stdout', text: 'real 42' }, req.header);
  const sealedReal = await kernelSeal(k, real, 0);
  await h(sealedReal);
  assert.equal(kc.handled.length, 2);
  assert.deepEqual(kc.handled[1].content, { name: 'stdout', text: 'real 42' });
  // Replayed: rejected, not shown again.
  const rejected: string[] = [];
  gate.events = { rejected: t => rejected.push(t), attestationMessage: () => undefined, isAttestationComm: () => false };
  await h(sealedReal);
  assert.equal(kc.handled.length, 2);
  assert.match(rejected[0], /replay/);
  // A clear error reply to our sealed request (the kernel could not open it): shown with its reason.
  await h(msg('shell', 'execute_reply', { status: 'error', ename: 'PPMLSealedFrameRejected', evalue: 'sealed request rejected (reorder)', traceback: [] }, req.header));
  assert.deepEqual(kc.handled.slice(2).map(m => `${m.channel}:${m.header.msg_type}`), ['iopub:error', 'shell:execute_reply']);
  // Shown as the server's claim: the text says it is unsealed and may come from the server.
  for (const shown of kc.handled.slice(2)) {
    assert.ok(String(shown.content.evalue).endsWith(UNAUTHENTICATED_REFUSAL), shown.content.evalue);
  }
  assert.match(rejected.at(-1) ?? '', /^an unsealed reply says the kernel refused a sealed execute_request/);
  // ...but a clear *ok* reply to it is a forgery: dropped.
  await h(msg('shell', 'execute_reply', { status: 'ok', execution_count: 9 }, req.header));
  assert.equal(kc.handled.length, 4);
});

test('a restart drops held requests (JupyterLab drops its futures) and messages sealed for the old session are never sent', async () => {
  const kc = new FakeConnection();
  const gate = SealingGate.install(kc);
  gate.ready(new Envelope(await keys()));
  (kc as any)._sendMessage(msg('shell', 'execute_request', { code: 'late' }));
  gate.hold(true); // restart while the request was being sealed
  await settle();
  assert.equal(kc.sent.length, 0);
  (kc as any)._sendMessage(msg('shell', 'execute_request', { code: 'held' }));
  gate.hold(true);
  gate.ready(new Envelope(await keys()));
  await settle();
  assert.equal(kc.sent.length, 0, 'held before the restart: dropped');
});
