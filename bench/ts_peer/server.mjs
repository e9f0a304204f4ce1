// The TypeScript peer: the same tool on the official MCP TypeScript SDK's Streamable HTTP server.
//
// node server.mjs --port N --upstream URL [--token T], run by scripts/bench from .cache/bench-ts-peer,
// where `npm install` put the SDK (package.json beside this file). It follows the SDK's own stateless
// example (examples/server/simpleStatelessStreamableHttp): its Express app (createMcpExpressApp, which
// parses JSON and checks the Host header of a localhost server), and per request a new McpServer and a
// StreamableHTTPServerTransport with sessionIdGenerator undefined, here with enableJsonResponse so the
// answer is JSON, not an event stream. One tool, get_me: the same GET /v1/me to the upstream simulator
// as the other peers, with Node's own fetch (keep-alive connections, pooled).
import { parseArgs } from 'node:util';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { createMcpExpressApp } from '@modelcontextprotocol/sdk/server/express.js';

const { values: args } = parseArgs({
  options: { port: { type: 'string' }, upstream: { type: 'string' }, token: { type: 'string', default: 'figd_bench_peer' } }
});
const meUrl = `${args.upstream.replace(/\/+$/, '')}/v1/me`;
const upstreamHeaders = { 'X-Figma-Token': args.token, 'User-Agent': 'mcp-platform/0.1 (+https://github.com/)' };

async function getMe() {
  const resp = await fetch(meUrl, { headers: upstreamHeaders, signal: AbortSignal.timeout(30000) });
  const body = await resp.text();
  if (resp.status !== 200) {
    throw new Error(`upstream answered ${resp.status}`);
  }
  const data = JSON.parse(body);
  return { content: [{ type: 'text', text: JSON.stringify(data) }], structuredContent: data };
}

function buildServer() {
  const server = new McpServer({ name: 'figma-peer', version: '1.0.0' });
  server.registerTool('get_me', { description: 'The Figma user this token belongs to (id, handle, email).' }, getMe);
  return server;
}

const app = createMcpExpressApp();
app.get('/health', (req, res) => res.json({ status: 'healthy' }));
app.post('/mcp', async (req, res) => {
  const server = buildServer();
  try {
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
    res.on('close', () => {
      transport.close();
      server.close();
    });
    await server.connect(transport);
    await transport.handleRequest(req, res, req.body);
  } catch (error) {
    console.error('Error handling MCP request:', error);
    if (!res.headersSent) {
      res.status(500).json({ jsonrpc: '2.0', error: { code: -32603, message: 'Internal server error' }, id: null });
    }
  }
});

const listener = app.listen(Number(args.port), '127.0.0.1', () => {
  console.log(`TypeScript SDK peer listening on 127.0.0.1:${args.port}`);
});
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => listener.close(() => process.exit(0)));
}
