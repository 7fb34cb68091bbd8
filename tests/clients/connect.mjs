// A Node client through Keyward the way an agent's own code would do it without proxy support in its
// runtime: CONNECT to the proxy, then TLS to the target over that tunnel, trusting only Node's default CAs
// plus NODE_EXTRA_CA_CERTS. Prints {"status": N, "error": "..."} as JSON.
// Usage: node connect.mjs PROXY_URL TARGET_URL [HEADER: VALUE ...]
import http from "node:http";
import tls from "node:tls";

const [proxy, target, ...headers] = process.argv.slice(2);
const url = new URL(target);
const port = url.port || "443";
const done = (result) => {
  process.stdout.write(JSON.stringify(result) + "\n");
  process.exit(0);
};
const connect = http.request(proxy, { method: "CONNECT", path: `${url.hostname}:${port}` });
connect.on("error", (e) => done({ status: 0, error: String(e) }));
connect.on("connect", (res, socket) => {
  if (res.statusCode !== 200) return done({ status: res.statusCode, error: "CONNECT refused" });
  const secure = tls.connect({ socket, servername: url.hostname }, () => {
    const lines = [`GET ${url.pathname}${url.search} HTTP/1.1`, `Host: ${url.host}`, "Connection: close", ...headers];
    secure.write(lines.join("\r\n") + "\r\n\r\n");
  });
  let reply = "";
  secure.on("data", (chunk) => (reply += chunk));
  secure.on("end", () => done({ status: Number(reply.split(" ")[1]) || 0 }));
  secure.on("error", (e) => done({ status: 0, error: String(e) }));
});
connect.end();
