/*
 * A Parquet Modular Encryption KMS client for Spark's own Parquet reader and writer.
 *
 * Master keys are the kernel's dataset keys (KEKs) named by key id. This client never
 * holds a KEK: like the Python workers, it sends wrapped keys to the kernel's key broker
 * (through BrokerClient, the JVM's one broker client) and gets data keys back. The
 * wrapped-key format and the wrapping context are the same as in
 * ppml_kernel/keys/pme/kms.py, so pyarrow and Spark read each other's files.
 */
package ppml;

import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.Base64;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.Map;
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

  private BrokerClient broker;

  @Override
  public void initialize(Configuration conf, String kmsInstanceID, String kmsInstanceURL,
      String accessToken) throws KeyAccessDeniedException {
    GcmWarmUp.start();  // Parquet decrypts every page in byte arrays: the slow path cold
    try {
      broker = BrokerClient.forConf(conf);
    } catch (IOException e) {
      throw new KeyAccessDeniedException(e.getMessage(), e);
    }
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

  private Map<String, Object> call(Map<String, Object> req) throws KeyAccessDeniedException {
    try {
      return broker.call(req);
    } catch (BrokerClient.Refused e) {
      throw new KeyAccessDeniedException("key broker: " + e.getMessage());
    } catch (IOException e) {
      throw new KeyAccessDeniedException(e.getMessage(), e);
    }
  }
}
