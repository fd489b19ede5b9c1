/*
 * The plaintext of one ppml-aead/1 file, read front to back (docs/format.md).
 *
 * The same checks as ppml_kernel/data/format.py, in the same words: the 256-byte header
 * is parsed strictly, the data key is unwrapped by the key broker under the header's
 * wrapping context, and chunk i is opened with AES-256-GCM under nonce file_nonce XOR i
 * and AAD SHA-256(fixed header) || i || final. A chunk that fails authentication is
 * never returned (GCM releases no plaintext before the tag verifies); a stream that ends
 * after a non-final chunk is "truncated", data after the final chunk is "extended".
 * Memory is one sealed and one plaintext chunk; the plaintext buffer is wiped on close.
 *
 * Chunks are opened between direct ByteBuffers, not byte arrays: HotSpot (17) runs the
 * byte-array GCM path for megabyte messages at ~60 MB/s until it has seen about a
 * thousand of them, the ByteBuffer path reaches its AES/GHASH intrinsics (GB/s) after
 * about seventy (measured: docs/datasets.md, "Spark's own CSV reader"). The first
 * stream a JVM opens starts a background thread that opens ~100 chunks of zeros under a
 * throwaway key (about a second of one core, once), so users' first queries do not pay
 * that. The buffers are pooled (wiped before they go back): opening a file allocates no
 * direct memory.
 *
 * Data keys unwrapped by the broker are kept in a bounded LRU keyed by the whole header,
 * as the Python workers' broker client does: a query that reads a file again does not
 * ask the broker again. Only the broker can produce an entry, so a header never seen by
 * it never finds a key here.
 */
package ppml;

import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.security.MessageDigest;
import java.util.Arrays;
import java.util.Base64;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentLinkedDeque;
import javax.crypto.AEADBadTagException;
import javax.crypto.Cipher;
import javax.crypto.spec.GCMParameterSpec;
import javax.crypto.spec.SecretKeySpec;
import org.apache.hadoop.io.compress.CompressionInputStream;

final class AeadInputStream extends CompressionInputStream {
  static final String FORMAT = "ppml-aead/1";
  private static final byte[] MAGIC = {(byte) 0x89, 'p', 'p', 'm', 'l', '-', 'a', 'e', 'a', 'd',
      '/', '1', '\r', '\n', 0x1a, '\n'};
  private static final int HEADER_SIZE = 256;
  private static final int FIXED_SIZE = 64;
  private static final int TAG_SIZE = 16;
  private static final int NONCE_SIZE = 12;
  private static final int KEY_ID_MAX = 95;
  private static final int MIN_CHUNK = 1 << 12;
  private static final int MAX_CHUNK = 1 << 26;
  private static final byte[] WRAP_CONTEXT =
      "ppml-aead/1 data key\0".getBytes(StandardCharsets.US_ASCII);
  private static final Base64.Encoder B64 = Base64.getEncoder();
  private static final Base64.Decoder UNB64 = Base64.getDecoder();

  private final Cipher cipher;
  private final SecretKeySpec key;
  private final byte[] fileNonce;
  private final byte[] digest;
  private final String keyId;
  private static final int KEY_CACHE_SIZE = 4096;
  private static final Map<ByteBuffer, byte[]> KEYS =
      new LinkedHashMap<>(64, 0.75f, true) {
        private static final long serialVersionUID = 1L;

        @Override
        protected boolean removeEldestEntry(Map.Entry<ByteBuffer, byte[]> eldest) {
          if (size() > KEY_CACHE_SIZE) {
            Arrays.fill(eldest.getValue(), (byte) 0);
            return true;
          }
          return false;
        }
      };
  private static final int POOL_SIZE = 8;
  private static final Map<Integer, ConcurrentLinkedDeque<Buffers>> POOL =
      new ConcurrentHashMap<>();

  /** One chunk's worth of buffers: the sealed bytes as read, and both direct buffers. */
  private static final class Buffers {
    final byte[] sealed;
    final ByteBuffer sealedBuf;
    final ByteBuffer plain;

    Buffers(int chunkSize) {
      sealed = new byte[chunkSize + TAG_SIZE];
      sealedBuf = ByteBuffer.allocateDirect(chunkSize + TAG_SIZE);
      plain = ByteBuffer.allocateDirect(chunkSize);
    }
  }


  private final int chunkSize;
  private Buffers buffers;
  private final byte[] sealed;
  private final ByteBuffer sealedBuf;
  private final ByteBuffer plain;
  private int pos;
  private int len;
  private long index;
  private boolean finished;
  private int lookahead = -1;
  private IOException broken; // once a chunk fails, every later read fails the same way

  AeadInputStream(InputStream in, BrokerClient broker) throws IOException {
    super(in);
    byte[] header = new byte[HEADER_SIZE];
    int got = readFully(header, 0, HEADER_SIZE);
    if (got < MAGIC.length || !Arrays.equals(header, 0, MAGIC.length, MAGIC, 0, MAGIC.length)) {
      throw new AeadFileError("NotEncryptedError", "not a " + FORMAT + " file (its first bytes are not the "
          + FORMAT + " magic); only encrypted files may end in .ppml");
    }
    if (got < HEADER_SIZE) {
      throw new AeadFileError("TruncatedFileError", "truncated: its " + FORMAT + " header is incomplete (" + got
          + " of " + HEADER_SIZE + " bytes)");
    }
    ByteBuffer h = ByteBuffer.wrap(header);
    int headerSize = h.getShort(16) & 0xffff;
    int cipherId = h.get(18) & 0xff;
    int wrapId = h.get(19) & 0xff;
    int chunkSize = h.getInt(20);
    if (headerSize != HEADER_SIZE || !zero(header, 36, 64)) {
      throw new AeadFileError("CorruptFileError", "corrupt " + FORMAT + " header (fixed fields)");
    }
    if (cipherId != 1 || wrapId != 1) {
      throw new AeadFileError("UnsupportedVersionError", "unsupported cipher " + cipherId + " / key wrap " + wrapId
          + " in its header");
    }
    if (chunkSize < MIN_CHUNK || chunkSize > MAX_CHUNK) {
      throw new AeadFileError("CorruptFileError", "corrupt header: chunk size " + chunkSize + " out of range");
    }
    int klen = header[FIXED_SIZE] & 0xff;
    int slot = FIXED_SIZE + 1;
    if (klen < 1 || klen > KEY_ID_MAX || !zero(header, slot + klen, slot + KEY_ID_MAX)
        || !zero(header, HEADER_SIZE - 28, HEADER_SIZE)) {
      throw new AeadFileError("CorruptFileError", "corrupt " + FORMAT + " header (key slot)");
    }
    for (int i = slot; i < slot + klen; i++) {
      if (header[i] < 0x21 || header[i] > 0x7e) {
        throw new AeadFileError("CorruptFileError", "corrupt header: invalid key id");
      }
    }
    keyId = new String(header, slot, klen, StandardCharsets.US_ASCII);
    int kcv = slot + KEY_ID_MAX;
    fileNonce = Arrays.copyOfRange(header, 24, 24 + NONCE_SIZE);
    try {
      digest = MessageDigest.getInstance("SHA-256").digest(Arrays.copyOf(header, FIXED_SIZE));
      ByteBuffer cacheKey = ByteBuffer.wrap(header.clone());
      byte[] dataKey;
      synchronized (KEYS) {
        byte[] hit = KEYS.get(cacheKey);
        dataKey = hit == null ? null : hit.clone();
      }
      if (dataKey == null) {
        dataKey = unwrap(broker, Arrays.copyOfRange(header, kcv, kcv + 8),
            Arrays.copyOfRange(header, kcv + 8, kcv + 20),
            Arrays.copyOfRange(header, kcv + 20, kcv + 68));
        synchronized (KEYS) {
          KEYS.put(cacheKey, dataKey.clone());
        }
      }
      key = new SecretKeySpec(dataKey, "AES");
      Arrays.fill(dataKey, (byte) 0);
      cipher = Cipher.getInstance("AES/GCM/NoPadding");
    } catch (GeneralSecurityException e) {
      throw new IOException("AES-256-GCM is not available in this JVM", e);
    }
    this.chunkSize = chunkSize;
    GcmWarmUp.start();
    Buffers pooled = POOL.computeIfAbsent(chunkSize, k -> new ConcurrentLinkedDeque<>()).poll();
    buffers = pooled != null ? pooled : new Buffers(chunkSize);
    sealed = buffers.sealed;
    sealedBuf = buffers.sealedBuf;
    plain = buffers.plain;
  }

  private byte[] unwrap(BrokerClient broker, byte[] kcv, byte[] nonce, byte[] ct)
      throws IOException, GeneralSecurityException {
    byte[] ctx = Arrays.copyOf(WRAP_CONTEXT, WRAP_CONTEXT.length + digest.length);
    System.arraycopy(digest, 0, ctx, WRAP_CONTEXT.length, digest.length);
    Map<String, Object> req = new LinkedHashMap<>();
    req.put("op", "unwrap");
    req.put("key_id", keyId);
    req.put("kcv", B64.encodeToString(kcv));
    req.put("nonce", B64.encodeToString(nonce));
    req.put("ct", B64.encodeToString(ct));
    req.put("ctx", B64.encodeToString(ctx));
    Map<String, Object> resp;
    try {
      resp = broker.call(req);
    } catch (BrokerClient.Refused e) {
      switch (e.code) {
        case "unknown_key":
          throw new AeadFileError("UnknownKeyError", "no key with key id '" + keyId + "' is available (the file "
              + "was encrypted for key id '" + keyId + "')", e);
        case "wrong_key":
          throw new AeadFileError("WrongKeyError", "wrong key: the key available as '" + keyId + "' is not the "
              + "key this file was encrypted with (key check value differs)", e);
        case "unwrap":
          throw new AeadFileError("HeaderTamperedError", "header was modified: the data-key slot does not "
              + "authenticate under key '" + keyId + "' although that key matches the "
              + "file's key check value", e);
        default:
          throw new AeadFileError("KeyBrokerError", "key broker refused key id '" + keyId + "': "
              + e.getMessage(), e);
      }
    }
    byte[] dataKey = UNB64.decode(String.valueOf(resp.get("key")));
    if (dataKey.length != 32) {
      Arrays.fill(dataKey, (byte) 0);
      throw new AeadFileError("BadDataKeyError", "the key broker returned a " + dataKey.length
          + "-byte data key for key id '" + keyId + "'; a " + FORMAT + " data key is 32 bytes");
    }
    return dataKey;
  }

  private static boolean zero(byte[] b, int from, int to) {
    for (int i = from; i < to; i++) {
      if (b[i] != 0) {
        return false;
      }
    }
    return true;
  }

  private int readFully(byte[] buf, int off, int n) throws IOException {
    int total = 0;
    while (total < n) {
      int r = in.read(buf, off + total, n - total);
      if (r < 0) {
        break;
      }
      total += r;
    }
    return total;
  }

  private byte[] nonce(long i) {
    byte[] n = fileNonce.clone();
    ByteBuffer b = ByteBuffer.wrap(n);
    b.putLong(4, b.getLong(4) ^ i);
    return n;
  }

  /** Opens sealed[0, n) into {@code plain}; on failure {@code plain} is wiped. */
  private int open(long i, boolean last, int n) throws GeneralSecurityException {
    cipher.init(Cipher.DECRYPT_MODE, key, new GCMParameterSpec(TAG_SIZE * 8, nonce(i)));
    cipher.updateAAD(digest);
    cipher.updateAAD(ByteBuffer.allocate(9).putLong(i).put((byte) (last ? 1 : 0)).array());
    sealedBuf.clear();
    sealedBuf.put(sealed, 0, n).flip();
    plain.clear();
    try {
      return cipher.doFinal(sealedBuf, plain);
    } catch (GeneralSecurityException | RuntimeException e) {
      wipe();
      throw e;
    } finally {
      plain.flip();
    }
  }

  private void wipe() {
    plain.clear();
    while (plain.remaining() >= 8) {
      plain.putLong(0L);
    }
    while (plain.hasRemaining()) {
      plain.put((byte) 0);
    }
    plain.clear().limit(0);
  }

  /** Reads, authenticates and decrypts the next chunk into {@code plain}. */
  private void nextChunk() throws IOException {
    len = 0;
    pos = 0;
    try {
      readChunk();
    } catch (IOException e) {
      broken = e;
      throw e;
    }
  }

  private void readChunk() throws IOException {
    int stride = sealed.length;
    int n = 0;
    if (lookahead >= 0) {
      sealed[0] = (byte) lookahead;
      n = 1;
      lookahead = -1;
    }
    n += readFully(sealed, n, stride - n);
    boolean last = n < stride;
    if (!last) {
      lookahead = in.read();
      last = lookahead < 0;
    }
    if (n < TAG_SIZE) {
      if (index == 0) {
        throw new AeadFileError("TruncatedFileError", "truncated: it has a header but no chunks");
      }
      throw new AeadFileError("CorruptFileError", "truncated or extended: its size does not fit the chunk layout "
          + "(a " + n + "-byte fragment after chunk " + (index - 1) + ")");
    }
    try {
      len = open(index, last, n);
    } catch (AEADBadTagException e) {
      throw diagnose(last, n);
    } catch (GeneralSecurityException e) {
      throw new IOException("chunk " + index + " could not be decrypted", e);
    }
    pos = 0;
    finished = last;
    index++;
  }

  /** Tell truncation and extension apart from tampering (the other flag verifies). */
  private AeadFileError diagnose(boolean last, int n) {
    try {
      open(index, !last, n);
    } catch (GeneralSecurityException e) {
      return new AeadFileError("TamperedChunkError", "chunk " + index + " failed authentication (modified, "
          + "reordered, from another file, or the header's fixed fields were edited)");
    } finally {
      wipe(); // an authentic chunk under the wrong flag is still never returned
    }
    if (last) {
      return new AeadFileError("TruncatedFileError", "truncated: chunk " + index + " is authentic but is not the "
          + "final chunk, so data after it is missing");
    }
    return new AeadFileError("ExtendedFileError", "extended: chunk " + index + " is the authentic final chunk but "
        + "more data follows it");
  }

  @Override
  public int read(byte[] b, int off, int n) throws IOException {
    if (broken != null) {
      throw new IOException(broken.getMessage(), broken);
    }
    if (n == 0) {
      return 0;
    }
    while (pos >= len) {
      if (finished) {
        return -1;
      }
      nextChunk();
    }
    int k = Math.min(n, len - pos);
    plain.get(pos, b, off, k);
    pos += k;
    return k;
  }

  @Override
  public int read() throws IOException {
    byte[] one = new byte[1];
    return read(one, 0, 1) < 0 ? -1 : one[0] & 0xff;
  }

  @Override
  public void resetState() throws IOException {
    throw new IOException(FORMAT + " streams cannot be reset");
  }

  @Override
  public void close() throws IOException {
    if (buffers != null) {
      wipe();
      Arrays.fill(sealed, (byte) 0);
      ConcurrentLinkedDeque<Buffers> pool = POOL.get(chunkSize);
      if (pool.size() < POOL_SIZE) {
        pool.offer(buffers);
      }
      buffers = null;
      broken = new IOException(FORMAT + " stream is closed");
    }
    len = 0;
    pos = 0;
    super.close();
  }
}
