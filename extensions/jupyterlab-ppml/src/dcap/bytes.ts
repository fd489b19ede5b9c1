/**
 * Byte helpers shared by the verifier and the channel (no Node or DOM-only APIs,
 * so the same code runs in the browser and under `node --test`).
 */

export function hex(data: Uint8Array): string {
  let out = '';
  for (const b of data) {
    out += b.toString(16).padStart(2, '0');
  }
  return out;
}

export function fromHex(text: string, what = 'hex string'): Uint8Array {
  if (text.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(text)) {
    throw new Error(`${what} is not valid hex`);
  }
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) {
    out[i] = parseInt(text.substr(i * 2, 2), 16);
  }
  return out;
}

export function b64encode(data: Uint8Array): string {
  let bin = '';
  for (let i = 0; i < data.length; i += 0x8000) {
    bin += String.fromCharCode(...data.subarray(i, i + 0x8000));
  }
  return btoa(bin);
}

export function b64decode(text: string, what = 'base64 field'): Uint8Array {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) {
    throw new Error(`${what} is not valid base64`);
  }
  const bin = atob(text);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) {
    out[i] = bin.charCodeAt(i);
  }
  return out;
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  const total = parts.reduce((n, p) => n + p.length, 0);
  const out = new Uint8Array(total);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

export function equal(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) {
    return false;
  }
  let diff = 0;
  for (let i = 0; i < a.length; i++) {
    diff |= a[i] ^ b[i];
  }
  return diff === 0;
}

export function utf8(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}

/** Length-prefix (u32 big-endian), as in docs/protocol.md. */
export function lp(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + data.length);
  new DataView(out.buffer).setUint32(0, data.length, false);
  out.set(data, 4);
  return out;
}

export function u64be(value: number): Uint8Array {
  const out = new Uint8Array(8);
  const view = new DataView(out.buffer);
  view.setUint32(0, Math.floor(value / 2 ** 32), false);
  view.setUint32(4, value >>> 0, false);
  return out;
}

/** A copy as a standalone ArrayBuffer (WebCrypto wants BufferSource without surprises). */
export function buf(data: Uint8Array): ArrayBuffer {
  return data.slice().buffer as ArrayBuffer;
}

/** Little-endian reader over quote bytes with bounds checks that name the field. */
export class Reader {
  private off = 0;
  constructor(private readonly data: Uint8Array, private readonly what = 'quote') {}

  get offset(): number {
    return this.off;
  }

  get remaining(): number {
    return this.data.length - this.off;
  }

  bytes(n: number, field: string): Uint8Array {
    if (n < 0 || this.off + n > this.data.length) {
      throw new Error(`${this.what} is truncated: ${field} needs ${n} bytes at offset ${this.off}`);
    }
    const out = this.data.subarray(this.off, this.off + n);
    this.off += n;
    return out;
  }

  u16(field: string): number {
    const b = this.bytes(2, field);
    return b[0] | (b[1] << 8);
  }

  u32(field: string): number {
    const b = this.bytes(4, field);
    return (b[0] | (b[1] << 8) | (b[2] << 16)) + b[3] * 0x1000000;
  }
}
