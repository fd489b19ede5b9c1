/*
 * The executor's key agent, seen from the JVM (ppml_kernel/keys/broker/agent.py).
 *
 * On an attested cluster the driver sets $PPML_KEY_AGENT (through spark.executorEnv) to
 * the executors' Python. The first key request in this JVM starts
 * "python -m ppml_kernel.keys.broker.agent", which attests this executor to the driver's
 * key broker and serves the local broker's wire format on a Unix socket that only this
 * JVM and its descendants may use. BrokerClient then talks to it like to the kernel's
 * local broker. In that mode there is no other broker: no configured path, no discovery,
 * so an executor never reads with keys that did not come through attestation.
 */
package ppml;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

final class KeyAgent {
  static final String ENV = "PPML_KEY_AGENT";
  private static final String READY = "ppml-key-agent ";
  private static final String FAILED = "ppml-key-agent-error ";
  private static final long START_SECONDS = 120;  // Python's imports in an enclave are slow

  private static Process process;
  private static Path socket;

  private KeyAgent() {}

  /** The Python that runs the agent, or null when this JVM uses the local broker. */
  static String configured() {
    String python = System.getenv(ENV);
    return python == null || python.isBlank() ? null : python.trim();
  }

  /** The running agent's socket; starts the agent first if it is not running. */
  static synchronized Path socket(String python) throws IOException {
    if (process != null && process.isAlive() && socket != null) {
      return socket;
    }
    ProcessBuilder builder = new ProcessBuilder(python, "-m", "ppml_kernel.keys.broker.agent");
    builder.redirectError(ProcessBuilder.Redirect.INHERIT);  // the executor's stderr log
    Process started;
    try {
      started = builder.start();
    } catch (IOException e) {
      throw new IOException("cannot start this executor's key agent with " + python
          + " ($" + ENV + "): " + e.getMessage(), e);
    }
    BufferedReader out = new BufferedReader(
        new InputStreamReader(started.getInputStream(), StandardCharsets.UTF_8));
    CompletableFuture<String> first = CompletableFuture.supplyAsync(() -> {
      try {
        return out.readLine();
      } catch (IOException e) {
        return null;
      }
    });
    String line;
    try {
      line = first.get(START_SECONDS, TimeUnit.SECONDS);
    } catch (InterruptedException e) {
      started.destroy();
      Thread.currentThread().interrupt();
      throw new IOException("interrupted while starting this executor's key agent", e);
    } catch (ExecutionException | TimeoutException e) {
      started.destroy();
      throw new IOException("this executor's key agent did not start within "
          + START_SECONDS + " s", e);
    }
    if (line != null && line.startsWith(READY)) {
      process = started;
      socket = Path.of(line.substring(READY.length()).trim());
      Runtime.getRuntime().addShutdownHook(new Thread(started::destroy, "ppml-key-agent-stop"));
      return socket;
    }
    started.destroy();
    String why = line != null && line.startsWith(FAILED) ? line.substring(FAILED.length())
        : "it exited without saying why (see the executor's stderr log)";
    throw new IOException("this executor's key agent did not start: " + why);
  }
}
