// A Node WebSocket agent (the `ws` package) reaching its upstream through Keyward with `https-proxy-agent`,
// holding only the placeholder. Sends three messages and `say-secret` (the upstream answers with the real
// secret, which Keyward must scrub), then closes. Prints what it received as JSON, never a secret.
// Usage: HTTPS_PROXY=… NODE_EXTRA_CA_CERTS=… PLACEHOLDER=… NODE_PATH=…/node_modules node ws_client.cjs URL
const WebSocket = require("ws");
const { HttpsProxyAgent } = require("https-proxy-agent");

const [url] = process.argv.slice(2);
const placeholder = process.env.PLACEHOLDER;
const ws = new WebSocket(url, {
  agent: new HttpsProxyAgent(process.env.HTTPS_PROXY),
  headers: { Authorization: `Bearer ${placeholder}` },
});
const received = [];
const timer = setTimeout(() => {
  console.log(JSON.stringify({ error: "timeout", received: received.length }));
  process.exit(1);
}, 15000);
ws.on("open", () => ["a", "b", "c", "say-secret"].forEach((m) => ws.send(m)));
ws.on("message", (data) => {
  received.push(data.toString());
  if (received.length === 4) ws.close(1000);
});
ws.on("close", (code) => {
  clearTimeout(timer);
  const echo = received[3] || "";
  console.log(JSON.stringify({
    echoes: received.slice(0, 3),
    secretEchoHasPlaceholder: echo === `echo:${placeholder}`,
    closeCode: code,
  }));
});
ws.on("error", (e) => {
  clearTimeout(timer);
  console.log(JSON.stringify({ error: String(e) }));
  process.exit(1);
});
