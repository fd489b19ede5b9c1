/**
 * KernelAttestation's state machine on a stand-in kernel connection (issue 11 items 6-9):
 * every failure ends in a red, named state; a kernelspec that says PPML with a kernel
 * that does not is red; a restart during verification never lets stale evidence through;
 * sends are bound to the generation they were prepared for; a v1 kernel is refused.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Signal } from '@lumino/signaling';

import { AttestationHost, AttestationManager, KernelAttestation } from '../src/attestation';
import { exportPublic, fingerprint, generateOwnerKey } from '../src/channel/crypto';
import { defaultPolicy } from '../src/dcap/policy';

class FakeKernel {
  id = 'k1';
  name = 'ppml-demo';
  clientId = 'client';
  username = 'user';
  isDisposed = false;
  control: any[] = [];
  shell: any[] = [];
  statusChanged = new Signal<any, string>(this);
  disposed = new Signal<any, void>(this);
  _msgChain: Promise<void> = Promise.resolve();
  _kernelSession = 's';
  _ws = null;
  _anyMessage = { emit: () => undefined };
  serverSettings = { serializer: { deserialize: (d: any) => d } };
  constructor(public info: Promise<any>) {}
  sendControlMessage(msg: any): void {
    this.control.push(msg);
  }
  _sendMessage(msg: any): void {
    this.shell.push(msg);
  }
  async _handleMessage(): Promise<void> {
    // nothing
  }
  _onWSMessage(): void {
    // replaced by the gate
  }
  clone(): FakeKernel {
    return new FakeKernel(this.info);
  }
  /** The kernel's reply on the attestation comm (IOPub), as the gate routes it. */
  async reply(data: unknown): Promise<void> {
    const open = this.control.filter(m => m.header.msg_type === 'comm_open').pop();
    await (this as any)._handleMessage({
      channel: 'iopub',
      header: { msg_id: 'x', msg_type: 'comm_msg', session: 's', username: 'k', version: '5.3', date: '' },
      parent_header: {},
      content: { comm_id: open.content.comm_id, data },
      metadata: {}
    });
  }
}

function host(patch: Partial<AttestationHost> = {}): AttestationHost {
  return {
    policy: defaultPolicy,
    approveSimulated: async () => true,
    notify: () => undefined,
    ownerKey: async () => {
      const kp = await generateOwnerKey();
      const pub = await exportPublic(kp.publicKey);
      return { privateKey: kp.privateKey, pub, fingerprint: await fingerprint(pub) };
    },
    kernelspecSaysPpml: () => false,
    ...patch
  };
}

const ppmlInfo = { implementation: 'ppml', ppml: { protocol_version: 'ppml-attest/2' } };
const until = async (f: () => boolean, ms = 2000) => {
  const end = Date.now() + ms;
  while (!f()) {
    if (Date.now() > end) {
      throw new Error('condition not reached');
    }
    await new Promise(r => setTimeout(r, 5));
  }
};

test('a kernelspec that says PPML with a kernel_info that does not: red, nothing sent (item 9)', async () => {
  const kernel = new FakeKernel(Promise.resolve({ implementation: 'ipython' }));
  const att = new AttestationManager(host({ kernelspecSaysPpml: () => true })).attach(kernel as any);
  await until(() => att.state.phase === 'failed');
  assert.match(att.state.message, /kernelspec 'ppml-demo' says PPML/);
  (kernel as any)._sendMessage({ channel: 'shell', header: { msg_id: 'e', msg_type: 'execute_request' }, parent_header: {}, content: { code: 'x' }, metadata: {} });
  assert.equal(kernel.shell.length, 0, 'the request was refused locally, never sent');
});

test('a plain kernel stays silent and unsealed', async () => {
  const kernel = new FakeKernel(Promise.resolve({ implementation: 'ipython' }));
  const att = new AttestationManager(host()).attach(kernel as any);
  await until(() => att.state.phase === 'not-ppml');
  (kernel as any)._sendMessage({ channel: 'shell', header: { msg_id: 'e', msg_type: 'execute_request' }, parent_header: {}, content: { code: 'x' }, metadata: {} });
  assert.equal(kernel.shell[0].content.code, 'x');
});

test('a v1 kernel is refused by name', async () => {
  const kernel = new FakeKernel(Promise.resolve({ implementation: 'ppml', ppml: { protocol_version: 'ppml-attest/1' } }));
  const att = new AttestationManager(host()).attach(kernel as any);
  await until(() => att.state.phase === 'failed');
  assert.match(att.state.message, /ppml-attest\/1.*needs ppml-attest\/2/);
});

test('a WebCrypto/IndexedDB failure ends red and named, not "verifying" forever (item 8)', async () => {
  const kernel = new FakeKernel(Promise.resolve(ppmlInfo));
  const att = new AttestationManager(host({ ownerKey: async () => Promise.reject(new Error('QuotaExceededError')) })).attach(kernel as any);
  await until(() => att.state.phase === 'failed');
  assert.match(att.state.message, /WebCrypto\/IndexedDB failed.*QuotaExceededError/);
});

test('malformed evidence and a kernel error end red and named', async () => {
  const kernel = new FakeKernel(Promise.resolve(ppmlInfo));
  const att = new AttestationManager(host()).attach(kernel as any);
  await until(() => kernel.control.some(m => m.header.msg_type === 'comm_open'));
  const hello = kernel.control.find(m => m.header.msg_type === 'comm_open').content.data;
  assert.equal(hello.protocol, 'ppml-attest/2');
  assert.equal(typeof hello.owner_pub, 'string');
  await kernel.reply({ type: 'evidence', protocol: 'ppml-attest/2', enclave_pub: 'AAAA', owners: [], quote: '', collateral: null });
  await until(() => att.state.phase === 'failed');
  assert.match(att.state.message, /enclave_pub/);
  // The browser told the kernel why (abort), and closed its comm.
  assert.ok(kernel.control.some(m => m.content?.data?.type === 'abort'));
});

test('a restart during verification: stale evidence is never used, and the new process is verified afresh (item 7)', async () => {
  const kernel = new FakeKernel(Promise.resolve(ppmlInfo));
  const att: KernelAttestation = new AttestationManager(host()).attach(kernel as any);
  await until(() => kernel.control.some(m => m.header.msg_type === 'comm_open'));
  const firstGeneration = att.generation;
  kernel.statusChanged.emit('restarting');
  assert.equal(att.state.phase, 'verifying');
  assert.ok(att.generation > firstGeneration);
  // The old process's evidence arrives after the restart: not routed (old comm), no state change.
  await kernel.reply({ type: 'evidence', protocol: 'ppml-attest/2', enclave_pub: 'AAAA', owners: [], quote: '', collateral: null });
  await new Promise(r => setTimeout(r, 50));
  assert.equal(att.state.phase, 'verifying', 'stale evidence neither verified nor failed the new process');
  // Sends bound to the old generation are refused (item 6).
  await assert.rejects(att.sendSecret(firstGeneration, 'r1', 'db', 'value'), /ended/);
  kernel.statusChanged.emit('idle');
  await until(() => kernel.control.filter(m => m.header.msg_type === 'comm_open').length === 2);
  const opens = kernel.control.filter(m => m.header.msg_type === 'comm_open');
  assert.notEqual(opens[0].content.comm_id, opens[1].content.comm_id);
  assert.notEqual(opens[0].content.data.nonce, opens[1].content.data.nonce);
});

test('dialogs are invalidated with their generation (item 6)', async () => {
  const kernel = new FakeKernel(Promise.resolve(ppmlInfo));
  const manager = new AttestationManager(host());
  const att = manager.attach(kernel as any);
  const seen: number[] = [];
  manager.invalidated.connect((_, { generation }) => seen.push(generation));
  await until(() => kernel.control.some(m => m.header.msg_type === 'comm_open'));
  const g = att.generation;
  kernel.statusChanged.emit('restarting');
  assert.ok(seen.includes(g));
});
