// A Java agent with no proxy code: java.net.http.HttpClient with its defaults, so the proxy and the trust
// store come only from JAVA_TOOL_OPTIONS (system properties). Prints the status code, or 0 and the error.
// Usage: java Agent URL [HEADER VALUE]
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;

public class Agent {
    public static void main(String[] args) {
        try {
            HttpRequest.Builder request = HttpRequest.newBuilder(URI.create(args[0]));
            if (args.length >= 3) {
                request.header(args[1], args[2]);
            }
            HttpResponse<String> response = HttpClient.newHttpClient()
                .send(request.build(), HttpResponse.BodyHandlers.ofString());
            System.out.println(response.statusCode());
        } catch (Exception e) {
            System.out.println("0 " + e);
        }
    }
}
