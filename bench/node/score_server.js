// The scoring server a user would write by hand around onnxruntime-node: one model, one
// route, `POST /score` with {"data": <nested array>} answered with {"<output>": <nested
// array>, ...} (the Azure ML scoring style, the same body cairn-infer's /score takes). It is
// the baseline `cairn-bench infer` measures cairn-infer against, so it does what such a server
// does and nothing more: Node's http module, JSON.parse, one InferenceSession with the same
// ONNX Runtime settings as cairn-infer (1 intra-op and 1 inter-op thread, all graph
// optimisations, CPU). FP32 inputs, as the benchmark's models take.
//
//   node score_server.js MODEL.onnx HOST PORT
'use strict';
const http = require('http');
const ort = require('onnxruntime-node');

function shapeOf(nested) {
  const dims = [];
  for (let a = nested; Array.isArray(a); a = a[0]) dims.push(a.length);
  return dims;
}

function nest(data, dims, offset = 0, depth = 0) {
  if (depth === dims.length - 1) return Array.from(data.subarray(offset, offset + dims[depth]));
  const stride = dims.slice(depth + 1).reduce((a, b) => a * b, 1);
  const out = [];
  for (let i = 0; i < dims[depth]; i++) out.push(nest(data, dims, offset + i * stride, depth + 1));
  return out;
}

function reply(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, {'Content-Type': 'application/json',
                         'Content-Length': Buffer.byteLength(text)});
  res.end(text);
}

async function main() {
  const [model, host, port] = process.argv.slice(2);
  if (!model || !host || !port) {
    console.error('usage: node score_server.js MODEL.onnx HOST PORT');
    process.exit(2);
  }
  const session = await ort.InferenceSession.create(model, {
    intraOpNumThreads: 1, interOpNumThreads: 1, graphOptimizationLevel: 'all',
    executionProviders: ['cpu'],
  });
  const input = session.inputNames[0];
  const server = http.createServer((req, res) => {
    if (req.method !== 'POST' || req.url !== '/score') return reply(res, 404, {error: 'POST /score'});
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', async () => {
      try {
        const body = JSON.parse(Buffer.concat(chunks).toString());
        const dims = shapeOf(body.data);
        const tensor = new ort.Tensor('float32', Float32Array.from(body.data.flat(Infinity)), dims);
        const results = await session.run({[input]: tensor});
        const out = {};
        for (const name of session.outputNames) out[name] = nest(results[name].data, results[name].dims);
        reply(res, 200, out);
      } catch (e) {
        reply(res, 400, {error: String(e.message || e)});
      }
    });
  });
  server.listen(Number(port), host, () => {
    console.log(`score_server listening on http://${host}:${server.address().port}`);
  });
  process.on('SIGTERM', () => server.close(() => process.exit(0)));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
