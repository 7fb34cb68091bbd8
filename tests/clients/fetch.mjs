// A Node agent with no proxy code: the global fetch, so the proxy comes only from the environment
// (NODE_USE_ENV_PROXY=1 with HTTPS_PROXY, Node >= 22.21) and trust from NODE_EXTRA_CA_CERTS.
// Prints the status code, or 0 and the error. Usage: node fetch.mjs URL [HEADER VALUE]
const [url, name, value] = process.argv.slice(2);
try {
  const response = await fetch(url, { headers: name ? { [name]: value } : {} });
  console.log(String(response.status));
} catch (e) {
  console.log(`0 ${e.cause ?? e}`);
}
