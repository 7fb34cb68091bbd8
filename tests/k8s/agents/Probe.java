// An agent of the pod simulator (tests/k8s/podsim.py): java.net.http.HttpClient with its defaults, so the
// proxy, the non-proxy hosts and the trust store come only from JAVA_TOOL_OPTIONS (system properties). Same
// calls and output as probe.py: java Probe "ID METHOD URL AUTH" ...
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;

public class Probe {
    static final String BODY =
        "{\"model\":\"podsim\",\"max_tokens\":1,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";

    static String quote(String s) {
        StringBuilder b = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') b.append('\\').append(c);
            else if (c < 0x20) b.append(String.format("\\u%04x", (int) c));
            else b.append(c);
        }
        return b.append('"').toString();
    }

    public static void main(String[] args) {
        HttpClient client = HttpClient.newHttpClient();
        for (String spec : args) {
            String[] p = spec.split(" ");
            String id = p[0], method = p[1], url = p[2], auth = p[3];
            try {
                HttpRequest.Builder r = HttpRequest.newBuilder(URI.create(url)).timeout(Duration.ofSeconds(15))
                    .header("x-podsim-call", id);
                String openai = System.getenv("OPENAI_API_KEY"), anthropic = System.getenv("ANTHROPIC_API_KEY");
                if (auth.equals("openai") && openai != null) r.header("Authorization", "Bearer " + openai);
                if (auth.equals("anthropic") && anthropic != null) {
                    r.header("x-api-key", anthropic).header("anthropic-version", "2023-06-01");
                }
                if (method.equals("POST") || method.equals("PUT")) {
                    r.header("Content-Type", "application/json")
                        .method(method, HttpRequest.BodyPublishers.ofString(BODY));
                } else {
                    r.method(method, HttpRequest.BodyPublishers.noBody());
                }
                HttpResponse<String> response = client.send(r.build(), HttpResponse.BodyHandlers.ofString());
                String body = response.body();
                System.out.println("{\"id\":" + quote(id) + ",\"status\":" + response.statusCode() + ",\"body\":"
                    + quote(body.substring(0, Math.min(300, body.length()))) + "}");
            } catch (Exception e) {
                String error = e.toString();
                System.out.println("{\"id\":" + quote(id) + ",\"status\":0,\"error\":"
                    + quote(error.substring(0, Math.min(500, error.length()))) + "}");
            }
        }
    }
}
