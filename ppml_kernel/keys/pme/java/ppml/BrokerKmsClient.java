/*
 * A Parquet Modular Encryption KMS client for Spark's own Parquet reader and writer.
 *
 * Master keys are the kernel's dataset keys (KEKs) named by key id. This client never
 * holds a KEK: like the Python workers, it sends wrapped keys to the kernel's key broker
 * (a Unix socket that only processes started by the kernel may use) and gets data keys
 * back. The wrapped-key format and the wrapping context are the same as in
 * ppml_kernel/keys/pme/kms.py, so pyarrow and Spark read each other's files.
 *
 * Broker path: Hadoop conf "ppml.keybroker", else $PPML_KEY_BROKER, else
 * <java.io.tmpdir>/ppml-kernel-<uid>/broker-<pid>.sock of this process or an ancestor.
 */
package ppml;

import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Base64;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Optional;
import org.apache.hadoop.conf.Configuration;
import org.apache.parquet.crypto.KeyAccessDeniedException;
import org.apache.parquet.crypto.keytools.KmsClient;

public final class BrokerKmsClient implements KmsClient {
  private static final byte[] CONTEXT =
      "ppml parquet modular encryption\0".getBytes(StandardCharsets.US_ASCII);
  private static final ObjectMapper JSON = new ObjectMapper();
  private static final Base64.Encoder B64 = Base64.getEncoder();
  private static final Base64.Decoder UNB64 = Base64.getDecoder();
  private static final HexFormat HEX = HexFormat.of();

  private final Object lock = new Object();
  private Path socket;
  private SocketChannel channel;

  @Override
  public void initialize(Configuration conf, String kmsInstanceID, String kmsInstanceURL,
      String accessToken) throws KeyAccessDeniedException {
    String explicit = conf == null ? null : conf.get("ppml.keybroker");
    if (explicit == null || explicit.isEmpty()) {
      explicit = System.getenv("PPML_KEY_BROKER");
    }
    socket = explicit != null && !explicit.isEmpty() ? Path.of(explicit) : discover();
    if (socket == null || !Files.exists(socket)) {
      throw new KeyAccessDeniedException(
          "no ppml key broker is reachable from this JVM (start Spark through the kernel)");
    }
  }

  private static Path discover() {
    String uid;
    try {
      uid = String.valueOf(Files.getAttribute(Path.of("/proc/self"), "unix:uid"));
    } catch (IOException | UnsupportedOperationException | IllegalArgumentException e) {
      return null;
    }
    Path dir = Path.of(System.getProperty("java.io.tmpdir"), "ppml-kernel-" + uid);
    Optional<ProcessHandle> p = Optional.of(ProcessHandle.current());
    while (p.isPresent()) {
      Path candidate = dir.resolve("broker-" + p.get().pid() + ".sock");
      if (Files.exists(candidate)) {
        return candidate;
      }
      p = p.get().parent();
    }
    return null;
  }

  @Override
  public String wrapKey(byte[] keyBytes, String masterKeyIdentifier)
      throws KeyAccessDeniedException {
    Map<String, Object> req = new LinkedHashMap<>();
    req.put("op", "wrap");
    req.put("key_id", masterKeyIdentifier);
    req.put("key", B64.encodeToString(keyBytes));
    req.put("ctx", B64.encodeToString(CONTEXT));
    Map<String, Object> resp = call(req);
    Map<String, Object> doc = new LinkedHashMap<>();
    doc.put("v", 1);
    doc.put("kcv", HEX.formatHex(UNB64.decode((String) resp.get("kcv"))));
    doc.put("n", HEX.formatHex(UNB64.decode((String) resp.get("nonce"))));
    doc.put("c", HEX.formatHex(UNB64.decode((String) resp.get("ct"))));
    try {
      return B64.encodeToString(JSON.writeValueAsBytes(doc));
    } catch (IOException e) {
      throw new KeyAccessDeniedException("cannot encode a wrapped key", e);
    }
  }

  @Override
  public byte[] unwrapKey(String wrappedKey, String masterKeyIdentifier)
      throws KeyAccessDeniedException {
    Map<?, ?> doc;
    try {
      doc = JSON.readValue(UNB64.decode(wrappedKey), Map.class);
    } catch (IOException | IllegalArgumentException e) {
      throw new KeyAccessDeniedException("malformed wrapped key in the Parquet footer", e);
    }
    Map<String, Object> req = new LinkedHashMap<>();
    req.put("op", "unwrap");
    req.put("key_id", masterKeyIdentifier);
    req.put("kcv", B64.encodeToString(HEX.parseHex((String) doc.get("kcv"))));
    req.put("nonce", B64.encodeToString(HEX.parseHex((String) doc.get("n"))));
    req.put("ct", B64.encodeToString(HEX.parseHex((String) doc.get("c"))));
    req.put("ctx", B64.encodeToString(CONTEXT));
    return UNB64.decode((String) call(req).get("key"));
  }

  @SuppressWarnings("unchecked")
  private Map<String, Object> call(Map<String, Object> req) throws KeyAccessDeniedException {
    synchronized (lock) {
      for (int attempt = 0; ; attempt++) {
        try {
          if (channel == null) {
            channel = SocketChannel.open(UnixDomainSocketAddress.of(socket));
          }
          byte[] body = JSON.writeValueAsBytes(req);
          ByteBuffer out = ByteBuffer.allocate(4 + body.length);
          out.putInt(body.length).put(body).flip();
          while (out.hasRemaining()) {
            channel.write(out);
          }
          ByteBuffer len = read(4);
          int n = len.getInt();
          if (n < 0 || n > (1 << 16)) {
            throw new IOException("key broker message too large");
          }
          Map<String, Object> resp = JSON.readValue(read(n).array(), HashMap.class);
          if (!Boolean.TRUE.equals(resp.get("ok"))) {
            throw new KeyAccessDeniedException(
                "key broker: " + resp.getOrDefault("message", "request refused"));
          }
          return resp;
        } catch (IOException e) {
          closeQuietly();
          if (attempt > 0) {
            throw new KeyAccessDeniedException("key broker " + socket + " not answering", e);
          }
        }
      }
    }
  }

  private ByteBuffer read(int n) throws IOException {
    ByteBuffer buf = ByteBuffer.allocate(n);
    while (buf.hasRemaining()) {
      if (channel.read(buf) < 0) {
        throw new IOException("key broker closed the connection");
      }
    }
    buf.flip();
    return buf;
  }

  private void closeQuietly() {
    if (channel != null) {
      try {
        channel.close();
      } catch (IOException ignored) {
        // nothing to do
      }
      channel = null;
    }
  }
}
