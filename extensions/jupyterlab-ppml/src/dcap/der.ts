/**
 * A strict DER reader: definite, minimal lengths; single-byte tags; nothing lenient.
 *
 * It returns exact byte spans of what it reads, so signatures are checked over the
 * bytes that were received (never over a re-encoding). The rules follow
 * rustls-webpki, which is what dcap-qvl uses, so both accept the same inputs.
 */

export class DerError extends Error {}

export const TAG = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  ENUMERATED: 0x0a,
  UTF8_STRING: 0x0c,
  SEQUENCE: 0x30,
  SET: 0x31,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  CTX0_CONSTRUCTED: 0xa0,
  CTX1_CONSTRUCTED: 0xa1,
  CTX3_CONSTRUCTED: 0xa3
} as const;

export interface Tlv {
  tag: number;
  /** Content bytes. */
  value: Uint8Array;
  /** The whole element: tag, length and content. */
  raw: Uint8Array;
}

export class Der {
  private off = 0;

  constructor(private readonly data: Uint8Array) {}

  atEnd(): boolean {
    return this.off >= this.data.length;
  }

  peek(tag: number): boolean {
    return !this.atEnd() && this.data[this.off] === tag;
  }

  read(): Tlv {
    const start = this.off;
    const d = this.data;
    if (this.off + 2 > d.length) {
      throw new DerError('DER: truncated element');
    }
    const tag = d[this.off++];
    if ((tag & 0x1f) === 0x1f) {
      throw new DerError('DER: high tag numbers are not supported');
    }
    let len = d[this.off++];
    if (len & 0x80) {
      const n = len & 0x7f;
      if (n === 0 || n > 4) {
        throw new DerError('DER: indefinite or oversized length');
      }
      if (this.off + n > d.length) {
        throw new DerError('DER: truncated length');
      }
      len = 0;
      for (let i = 0; i < n; i++) {
        len = len * 256 + d[this.off++];
      }
      const min = n === 1 ? 0x80 : 256 ** (n - 1);
      if (len < min) {
        throw new DerError('DER: non-minimal length');
      }
    }
    if (this.off + len > d.length) {
      throw new DerError('DER: element runs past its container');
    }
    const value = d.subarray(this.off, this.off + len);
    this.off += len;
    return { tag, value, raw: d.subarray(start, this.off) };
  }

  expect(tag: number, what: string): Tlv {
    if (this.atEnd()) {
      throw new DerError(`DER: missing ${what}`);
    }
    const el = this.read();
    if (el.tag !== tag) {
      throw new DerError(`DER: ${what} has tag 0x${el.tag.toString(16)}, expected 0x${tag.toString(16)}`);
    }
    return el;
  }

  optional(tag: number, what: string): Tlv | undefined {
    return this.peek(tag) ? this.expect(tag, what) : undefined;
  }

  end(what: string): void {
    if (!this.atEnd()) {
      throw new DerError(`DER: trailing data after ${what}`);
    }
  }
}

/** Parse exactly one element of `tag` that fills `data`. */
export function single(data: Uint8Array, tag: number, what: string): Tlv {
  const r = new Der(data);
  const el = r.expect(tag, what);
  r.end(what);
  return el;
}

/** Non-negative, minimally encoded INTEGER content as a number (small values only). */
export function smallUint(value: Uint8Array, what: string, max: number): number {
  if (value.length === 0) {
    throw new DerError(`DER: empty INTEGER ${what}`);
  }
  if (value[0] & 0x80) {
    throw new DerError(`DER: negative INTEGER ${what}`);
  }
  if (value.length > 1 && value[0] === 0 && !(value[1] & 0x80)) {
    throw new DerError(`DER: non-minimal INTEGER ${what}`);
  }
  let n = 0;
  for (const b of value) {
    n = n * 256 + b;
  }
  if (n > max) {
    throw new DerError(`DER: INTEGER ${what} is too large`);
  }
  return n;
}

/** An optional DER BOOLEAN (absent = false), strict 0x00/0xff. */
export function optionalBool(r: Der, what: string): boolean {
  if (!r.peek(TAG.BOOLEAN)) {
    return false;
  }
  const el = r.expect(TAG.BOOLEAN, what);
  if (el.value.length !== 1 || (el.value[0] !== 0x00 && el.value[0] !== 0xff)) {
    throw new DerError(`DER: bad BOOLEAN ${what}`);
  }
  return el.value[0] === 0xff;
}

/** Dotted form of an OBJECT IDENTIFIER's content. */
export function oidString(value: Uint8Array): string {
  if (value.length === 0) {
    throw new DerError('DER: empty OID');
  }
  const parts: number[] = [];
  let acc = 0;
  for (let i = 0; i < value.length; i++) {
    acc = acc * 128 + (value[i] & 0x7f);
    if (!(value[i] & 0x80)) {
      if (parts.length === 0) {
        const first = acc < 80 ? Math.floor(acc / 40) : 2;
        parts.push(first, acc - first * 40);
      } else {
        parts.push(acc);
      }
      acc = 0;
    } else if (i === value.length - 1) {
      throw new DerError('DER: truncated OID');
    }
  }
  return parts.join('.');
}

/** BIT STRING content -> bytes, requiring zero unused bits (keys, signatures). */
export function bitStringBytes(value: Uint8Array, what: string): Uint8Array {
  if (value.length < 1 || value[0] !== 0) {
    throw new DerError(`DER: ${what} must be a BIT STRING without unused bits`);
  }
  return value.subarray(1);
}

/** Whether bit `n` (0 = most significant of the first byte) is set in a BIT STRING. */
export function bitSet(value: Uint8Array, n: number, what: string): boolean {
  if (value.length < 1 || value[0] > 7 || (value.length === 1 && value[0] !== 0)) {
    throw new DerError(`DER: bad BIT STRING ${what}`);
  }
  const unused = value[0];
  const bits = value.subarray(1);
  if (bits.length > 0 && unused > 0 && (bits[bits.length - 1] & ((1 << unused) - 1)) !== 0) {
    throw new DerError(`DER: BIT STRING ${what} has non-zero padding`);
  }
  const byte = n >> 3;
  return byte < bits.length && (bits[byte] & (0x80 >> (n & 7))) !== 0;
}

const DAYS = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

function twoDigits(v: Uint8Array, at: number, min: number, max: number): number {
  const a = v[at] - 0x30;
  const b = v[at + 1] - 0x30;
  if (!(a >= 0 && a <= 9 && b >= 0 && b <= 9)) {
    throw new DerError('DER: bad digit in time');
  }
  const n = a * 10 + b;
  if (n < min || n > max) {
    throw new DerError('DER: time field out of range');
  }
  return n;
}

/** UTCTime or GeneralizedTime (YYMMDDHHMMSSZ / YYYYMMDDHHMMSSZ) -> Unix seconds. */
export function readTime(r: Der, what: string): number {
  const utc = r.peek(TAG.UTC_TIME);
  const el = r.expect(utc ? TAG.UTC_TIME : TAG.GENERALIZED_TIME, what);
  const v = el.value;
  const expectLen = utc ? 13 : 15;
  if (v.length !== expectLen || v[v.length - 1] !== 0x5a /* Z */) {
    throw new DerError(`DER: ${what} is not a UTC time ending in Z`);
  }
  let i = 0;
  let year: number;
  if (utc) {
    const lo = twoDigits(v, 0, 0, 99);
    year = (lo >= 50 ? 1900 : 2000) + lo;
    i = 2;
  } else {
    year = twoDigits(v, 0, 0, 99) * 100 + twoDigits(v, 2, 0, 99);
    i = 4;
  }
  const leap = (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0;
  const month = twoDigits(v, i, 1, 12);
  const dim = month === 2 && leap ? 29 : DAYS[month - 1];
  const day = twoDigits(v, i + 2, 1, dim);
  const hour = twoDigits(v, i + 4, 0, 23);
  const minute = twoDigits(v, i + 6, 0, 59);
  const second = twoDigits(v, i + 8, 0, 59);
  if (year < 1970) {
    throw new DerError(`DER: ${what} is before 1970`);
  }
  return Date.UTC(year, month - 1, day, hour, minute, second) / 1000;
}
