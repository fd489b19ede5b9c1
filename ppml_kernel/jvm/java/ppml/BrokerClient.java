/*
 * The JVM's one client of the kernel's local key broker (ppml_kernel/keys/broker/local.py).
 *
 * The broker is a Unix socket that only processes started by the kernel may use; requests
 * and answers are 4-byte big-endian length-prefixed JSON. This class never holds a KEK: it
 * sends wrapped keys and gets data keys back, exactly like the Python workers do. Both JVM
 * users (Parquet's BrokerKmsClient and the ppml-aead/1 codec) share one connection per
 * socket, so a query that opens many files does not open many connections.
 *
 * Broker path: on an attested cluster's executors ($PPML_KEY_AGENT set), the executor's
 * key agent (KeyAgent) and nothing else. Otherwise Hadoop conf "ppml.keybroker", else
 * $PPML_KEY_BROKER, else <java.io.tmpdir>/ppml-kernel-<uid>/broker-<pid>.sock of this
 * process or an ancestor.
 */
package ppml;

import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.ConcurrentHashMap;
import org.apache.hadoop.conf.Configuration;

public final class BrokerClient {
  /** The broker answered, and said no: {@link #code} is its error kind (wrong_key, ...). */
  public static final class Refused extends IOException {
    private static final long serialVersionUID = 1L;
    public final String code;

    Refused(String code, String message) {
      super(message);
      this.code = code;
    }
  }

  private static final ObjectMapper JSON = new ObjectMapper();
  private static final int MAX_MESSAGE = 1 << 16;
  private static final Map<Path, BrokerClient> CLIENTS = new ConcurrentHashMap<>();

  private final Path socket;
  private final Object lock = new Object();
  private SocketChannel channel;

  private BrokerClient(Path socket) {
    this.socket = socket;
  }

  /** The shared client for the broker this JVM may use; an IOException says why none. */
  public static BrokerClient forConf(Configuration conf) throws IOException {
    String agent = KeyAgent.configured();
    if (agent != null) {  // keys only through this executor's attestation: no fallback
      return CLIENTS.computeIfAbsent(KeyAgent.socket(agent), BrokerClient::new);
    }
    String explicit = conf == null ? null : conf.get("ppml.keybroker");
    if (explicit == null || explicit.isEmpty()) {
      explicit = System.getenv("PPML_KEY_BROKER");
    }
    Path path = explicit != null && !explicit.isEmpty() ? Path.of(explicit) : discover();
    if (path == null || !Files.exists(path)) {
      throw new IOException(
          "no ppml key broker is reachable from this JVM (start Spark through the kernel)");
    }
    return CLIENTS.computeIfAbsent(path, BrokerClient::new);
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

  public Path socket() {
    return socket;
  }

  /** One request; {@link Refused} when the broker says no, IOException when it is gone. */
  @SuppressWarnings("unchecked")
  public Map<String, Object> call(Map<String, Object> req) throws IOException {
    synchronized (lock) {
      for (int attempt = 0; ; attempt++) {
        Map<String, Object> resp;
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
          int n = read(4).getInt();
          if (n < 0 || n > MAX_MESSAGE) {
            throw new IOException("key broker message too large");
          }
          resp = JSON.readValue(read(n).array(), HashMap.class);
        } catch (IOException e) {
          closeQuietly();
          if (attempt > 0) {
            throw new IOException("key broker " + socket + " not answering", e);
          }
          continue; // a connection the broker closed while idle: reconnect once
        }
        if (!Boolean.TRUE.equals(resp.get("ok"))) {
          throw new Refused(String.valueOf(resp.getOrDefault("error", "refused")),
              String.valueOf(resp.getOrDefault("message", "request refused")));
        }
        return resp;
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
        // nothing to do: the next call reconnects
      }
      channel = null;
    }
  }
}
