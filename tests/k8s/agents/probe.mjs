// An agent of the pod simulator (tests/k8s/podsim.py) on Node >= 22.21: the global fetch with no proxy code,
// so the proxy comes only from the environment (NODE_USE_ENV_PROXY=1 with HTTPS_PROXY/NO_PROXY) and trust
// from NODE_EXTRA_CA_CERTS. Same calls and output as probe.py: node probe.mjs "ID METHOD URL AUTH" ...
const BODY = JSON.stringify({ model: "podsim", max_tokens: 1, messages: [{ role: "user", content: "hi" }] });

function headersFor(auth) {
  if (auth === "openai" && process.env.OPENAI_API_KEY) return { Authorization: `Bearer ${process.env.OPENAI_API_KEY}` };
  if (auth === "anthropic" && process.env.ANTHROPIC_API_KEY)
    return { "x-api-key": process.env.ANTHROPIC_API_KEY, "anthropic-version": "2023-06-01" };
  return {};
}

for (const spec of process.argv.slice(2)) {
  const [id, method, url, auth] = spec.split(" ");
  const headers = { "x-podsim-call": id, ...headersFor(auth) };
  const init = { method, headers, signal: AbortSignal.timeout(15000) };
  if (method === "POST" || method === "PUT") {
    headers["Content-Type"] = "application/json";
    init.body = BODY;
  }
  try {
    const response = await fetch(url, init);
    const body = await response.text();
    console.log(JSON.stringify({ id, status: response.status, body: body.slice(0, 300) }));
  } catch (e) {
    console.log(JSON.stringify({ id, status: 0, error: String(e.cause ?? e).slice(0, 500) }));
  }
}
