/**
 * The mutation language of tests/data/tamper-vectors.json, the same operations as
 * `apply()` in tests/tools/make_tamper_vectors.py.
 */
import { fromHex, hex } from '../src/dcap/bytes';

export interface Applied {
  quote: Uint8Array;
  collateral: Record<string, unknown>;
  root?: Uint8Array;
  now: number;
}

export function applyMutations(
  base: { quote: Uint8Array; collateral: Record<string, unknown>; root?: Uint8Array },
  c: any,
  file: any,
  _dataDir: string
): Applied {
  let q = c.quote ? fromHex(c.quote) : base.quote.slice();
  const col: Record<string, unknown> = { ...base.collateral };
  for (const m of c.mutations) {
    if (m.target === 'quote') {
      const view = new DataView(q.buffer, q.byteOffset, q.byteLength);
      switch (m.op) {
        case 'xor':
          q[m.offset] ^= m.mask;
          break;
        case 'set_byte':
          q[m.offset] = m.value;
          break;
        case 'truncate':
          q = q.slice(0, m.length);
          break;
        case 'append': {
          const extra = fromHex(m.hex);
          const out = new Uint8Array(q.length + extra.length);
          out.set(q);
          out.set(extra, q.length);
          q = out;
          break;
        }
        case 'set_u16':
          view.setUint16(m.offset, m.value, true);
          break;
        case 'set_u32':
          view.setUint32(m.offset, m.value, true);
          break;
        default:
          throw new Error(`unknown op ${m.op}`);
      }
    } else {
      switch (m.op) {
        case 'set':
          col[m.field] = m.value;
          break;
        case 'delete':
          delete col[m.field];
          break;
        case 'replace_text':
          col[m.field] = String(col[m.field]).replace(m.old, m.new);
          break;
        case 'xor_hex': {
          const b = fromHex(String(col[m.field]));
          b[m.offset >= 0 ? m.offset : b.length + m.offset] ^= m.mask;
          col[m.field] = hex(b);
          break;
        }
        case 'copy':
          col[m.field] = col[m.from];
          break;
        default:
          throw new Error(`unknown op ${m.op}`);
      }
    }
  }
  let root = base.root;
  if (c.root_der) {
    root = fromHex(c.root_der);
  }
  if (c.root === 'intel') {
    root = undefined;
  } else if (c.root === 'synthetic') {
    root = fromHex(file.synthetic_root_der);
  }
  const now = c.verify_at ?? (c.base.vector ? c.base.verify_at : file.synthetic_bases[c.base.synthetic].verify_at);
  return { quote: q, collateral: col, root, now };
}
