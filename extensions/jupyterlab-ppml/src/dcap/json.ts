/**
 * A strict JSON reader for signed collateral (TCB Info, QE Identity, the collateral
 * object), at least as strict as serde_json under dcap-qvl's serde structs:
 *
 *  - a key given twice in one object is an error (serde: "duplicate field"; JSON.parse
 *    would silently keep the last one, so a signer could hide `"tcbStatus":"Revoked"`);
 *  - a number written with a fraction or an exponent (`17.0`, `1.7e1`) or as `-0` is a
 *    `JsonFloat`, never a JS number, so integer fields reject it (serde: "invalid type:
 *    floating point");
 *  - RFC 8259 grammar only: no leading zeros, no `+`, JSON whitespace only, nothing
 *    after the value, no control characters in strings, no lone surrogate escapes.
 */

export class JsonError extends Error {}

/** A number that serde_json reads as a float (fraction, exponent or negative zero). */
export class JsonFloat {
  constructor(readonly text: string) {}
}

export type StrictJson = null | boolean | number | string | JsonFloat | StrictJson[] | { [key: string]: StrictJson };

const MAX_DEPTH = 512;

export function parseStrictJson(text: string): StrictJson {
  let i = 0;
  const n = text.length;
  const fail = (msg: string): never => {
    throw new JsonError(`${msg} at offset ${i}`);
  };
  const ws = (): void => {
    while (i < n) {
      const c = text.charCodeAt(i);
      if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) {
        i++;
      } else {
        break;
      }
    }
  };
  const hex4 = (): number => {
    const h = text.slice(i, i + 4);
    if (!/^[0-9a-fA-F]{4}$/.test(h)) {
      fail('invalid \\u escape');
    }
    i += 4;
    return parseInt(h, 16);
  };
  const str = (): string => {
    i++; // opening quote
    let out = '';
    for (;;) {
      if (i >= n) {
        fail('unterminated string');
      }
      const c = text.charCodeAt(i);
      if (c === 0x22) {
        i++;
        return out;
      }
      if (c < 0x20) {
        fail('control character in string');
      }
      if (c !== 0x5c) {
        // Raw surrogates come from the decoded text and are paired unless the input was not UTF-8.
        out += text[i++];
        continue;
      }
      i++;
      const e = text[i++];
      switch (e) {
        case '"':
          out += '"';
          break;
        case '\\':
          out += '\\';
          break;
        case '/':
          out += '/';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u': {
          const u = hex4();
          if (u >= 0xdc00 && u <= 0xdfff) {
            fail('lone trailing surrogate');
          }
          if (u >= 0xd800 && u <= 0xdbff) {
            if (text.slice(i, i + 2) !== '\\u') {
              fail('lone leading surrogate');
            }
            i += 2;
            const lo = hex4();
            if (lo < 0xdc00 || lo > 0xdfff) {
              fail('lone leading surrogate');
            }
            out += String.fromCharCode(u, lo);
          } else {
            out += String.fromCharCode(u);
          }
          break;
        }
        default:
          fail('invalid escape');
      }
    }
  };
  const num = (): number | JsonFloat => {
    const m = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/.exec(text.slice(i, i + 400));
    if (!m || m[0].length === 0) {
      fail('invalid number');
    }
    const lexeme = m![0];
    i += lexeme.length;
    if (i < n && /[0-9.eE+-]/.test(text[i])) {
      fail('invalid number');
    }
    if (m![2] !== undefined || m![3] !== undefined || lexeme === '-0') {
      return new JsonFloat(lexeme);
    }
    return Number(lexeme);
  };
  const value = (depth: number): StrictJson => {
    if (depth > MAX_DEPTH) {
      fail('nesting too deep');
    }
    ws();
    if (i >= n) {
      fail('unexpected end of input');
    }
    const c = text[i];
    if (c === '{') {
      i++;
      const obj: { [key: string]: StrictJson } = Object.create(null);
      const seen = new Set<string>();
      ws();
      if (text[i] === '}') {
        i++;
        return obj;
      }
      for (;;) {
        ws();
        if (text[i] !== '"') {
          fail('expected a key');
        }
        const key = str();
        if (seen.has(key)) {
          fail(`duplicate key '${key}'`);
        }
        seen.add(key);
        ws();
        if (text[i] !== ':') {
          fail("expected ':'");
        }
        i++;
        obj[key] = value(depth + 1);
        ws();
        if (text[i] === ',') {
          i++;
          continue;
        }
        if (text[i] === '}') {
          i++;
          return obj;
        }
        fail("expected ',' or '}'");
      }
    }
    if (c === '[') {
      i++;
      const arr: StrictJson[] = [];
      ws();
      if (text[i] === ']') {
        i++;
        return arr;
      }
      for (;;) {
        arr.push(value(depth + 1));
        ws();
        if (text[i] === ',') {
          i++;
          continue;
        }
        if (text[i] === ']') {
          i++;
          return arr;
        }
        fail("expected ',' or ']'");
      }
    }
    if (c === '"') {
      return str();
    }
    if (c === '-' || (c >= '0' && c <= '9')) {
      return num();
    }
    for (const [word, v] of [
      ['true', true],
      ['false', false],
      ['null', null]
    ] as const) {
      if (text.startsWith(word, i)) {
        i += word.length;
        return v;
      }
    }
    return fail('expected a value');
  };
  const result = value(0);
  ws();
  if (i !== n) {
    fail('trailing characters');
  }
  return result;
}
