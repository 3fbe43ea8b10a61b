'use strict';
// An IoT Edge module built on the official Azure IoT device SDK for Node (ModuleClient over
// MQTT), driven by a test through JSON lines.
//
// stdin: one request object per line, {"op": NAME, "id": ANY, ...arguments}. Requests run
//   concurrently; each one gets exactly one reply on stdout carrying the same "op" and "id",
//   with "ok": true and the result, or "ok": false and "error": {message, name, statusCode?}.
// stdout: replies and events, one JSON object per line. Events carry "event" instead of "op".
// stderr: diagnostics for humans (the test shows them when it fails).
//
// Ops:
//   open                                      ModuleClient.open(), then listens for inputs and
//                                             for the methods named in CAIRN_TEST_METHODS
//   twin_get                                  -> {desired, reported}; desired patches are
//                                             announced as events from then on
//   twin_patch {patch}                        updates reported properties
//   send {output, body, properties?, messageId?, correlationId?, contentType?,
//         contentEncoding?}                   sendOutputEvent
//   send_batch {count, output, prefix, window?, body?, properties?}
//                                             sends count messages with messageIds prefix-0..,
//                                             at most `window` (default 1) in flight
//   invoke {deviceId, moduleId?, methodName, payload?, responseTimeoutInSeconds?,
//           connectTimeoutInSeconds?}         ModuleClient.invokeMethod (HTTPS to the gateway)
//   close                                     ModuleClient.close()
// Events:
//   {"event":"connect"} {"event":"disconnect","reason"?} {"event":"error","error":{...}}
//   {"event":"desired","patch":...}         what the SDK's Twin announces: the whole desired
//                                             properties after each GET, then each patch
//   {"event":"input","input":NAME,"body":TEXT,"properties":{...},"messageId",...}
//   {"event":"method","name":NAME,"payload":...}
//   {"event":"ready","moduleId","deviceId"}   once, after the client object exists
//   {"event":"exit"}                          stdin closed; the process is about to exit
//
// Environment:
//   EdgeHubConnectionString, EdgeModuleCACertificateFile   what ModuleClient.fromEnvironment
//                                                          reads (docs/protocol.md §6.2 step 1)
//   CAIRN_TEST_METHODS    method names to register with onMethod (default "echo,fail,slow").
//                         Every one answers 200 {"echo": payload, "module": moduleId}, except
//                         "fail" (500 {"error":"asked to fail"}) and "slow" (answers after 10 s)
//   CAIRN_TEST_RETRY      "none" gives the client the SDK's NoRetry policy so a failing
//                         operation fails at once; anything else keeps the SDK's default
//   CAIRN_TEST_CONNECT_MAP  see connect_map.js

require('./connect_map');

const readline = require('readline');
const {ModuleClient, Message} = require('azure-iot-device');
const {Mqtt} = require('azure-iot-device-mqtt');
const {NoRetry} = require('azure-iot-common');

const SLOW_METHOD_DELAY_MS = 10000;

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function log(...args) {
  process.stderr.write(`[module.js ${new Date().toISOString()}] ${args.join(' ')}\n`);
}

// Errors from the SDK carry the HTTP response (invokeMethod) or a transport error; keep what a
// test can assert on and drop the rest (responses hold sockets with circular references).
function describeError(err) {
  if (!err) return {message: 'unknown error'};
  const out = {name: err.name || 'Error', message: String(err.message)};
  const response = err.response || err.transportError?.response;
  if (response && response.statusCode !== undefined) out.statusCode = response.statusCode;
  const body = err.responseBody ?? err.transportError?.responseBody;
  if (body !== undefined) {
    try {
      out.body = typeof body === 'string' ? JSON.parse(body) : body;
    } catch (_) {
      out.body = String(body);
    }
  }
  if (err.transportError && err.transportError !== err) {
    out.transportError = String(err.transportError.message || err.transportError);
  }
  return out;
}

// Node's Message.data may be a Buffer or a string; tests want text.
function bodyText(data) {
  if (data === undefined || data === null) return '';
  return Buffer.isBuffer(data) ? data.toString('utf8') : String(data);
}

function messageFields(msg) {
  const properties = {};
  for (const {key, value} of msg.properties.propertyList) properties[key] = value;
  const out = {body: bodyText(msg.getData ? msg.getData() : msg.data), properties};
  for (const k
           of ['messageId', 'correlationId', 'contentType', 'contentEncoding', 'userId', 'to',
               'expiryTimeUtc']) {
    if (msg[k] !== undefined) out[k] = msg[k];
  }
  return out;
}

function buildMessage(args, fallbackBody) {
  const body = args.body !== undefined ? args.body : fallbackBody;
  const msg = new Message(typeof body === 'string' ? body : JSON.stringify(body));
  for (const [k, v] of Object.entries(args.properties || {})) msg.properties.add(k, String(v));
  if (args.messageId !== undefined) msg.messageId = String(args.messageId);
  if (args.correlationId !== undefined) msg.correlationId = String(args.correlationId);
  if (args.contentType !== undefined) msg.contentType = String(args.contentType);
  if (args.contentEncoding !== undefined) msg.contentEncoding = String(args.contentEncoding);
  return msg;
}

function methodNames() {
  const raw = process.env.CAIRN_TEST_METHODS ?? 'echo,fail,slow';
  return raw.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
}

class Module {
  constructor(client) {
    this.client = client;
    this.twin = null;
    this.listening = false;
    const cs = parseConnectionString(
        process.env.EdgeHubConnectionString || process.env.IotHubConnectionString || '');
    this.moduleId = cs.ModuleId;
    this.deviceId = cs.DeviceId;
    client.on('connect', () => emit({event: 'connect'}));
    client.on('error', (err) => emit({event: 'error', error: describeError(err)}));
    client.on('disconnect', (reason) => {
      const out = {event: 'disconnect'};
      if (reason) {
        out.reason = describeError(reason.transportError || reason);
      }
      emit(out);
    });
  }

  // Listeners are attached after open, as the SDK samples do: attaching them earlier makes the
  // SDK connect on its own, and a failure would then surface as an "error" event instead of
  // as the open reply.
  listen() {
    if (this.listening) return;
    this.listening = true;
    this.client.on('inputMessage', (inputName, msg) => {
      emit({event: 'input', input: inputName, ...messageFields(msg)});
      this.client.complete(msg, (err) => {
        if (err) emit({event: 'error', error: describeError(err), during: 'complete'});
      });
    });
    for (const name of methodNames()) {
      this.client.onMethod(name, (request, response) => this.onMethod(name, request, response));
    }
  }

  onMethod(name, request, response) {
    emit({event: 'method', name, payload: request.payload ?? null});
    let status = 200;
    let payload = {echo: request.payload ?? null, module: this.moduleId};
    if (name === 'fail') {
      status = 500;
      payload = {error: 'asked to fail'};
    }
    const answer = () => response.send(status, payload, (err) => {
      if (err) emit({event: 'error', error: describeError(err), during: `method ${name}`});
    });
    if (name === 'slow') {
      setTimeout(answer, SLOW_METHOD_DELAY_MS);
    } else {
      answer();
    }
  }

  // client.getTwin() GETs the twin every time; the first call also creates the SDK's Twin
  // object, which announces desired properties from then on.
  async getTwin() {
    const twin = await this.client.getTwin();
    if (this.twin !== twin) {
      this.twin = twin;
      twin.on('properties.desired', (patch) => emit({event: 'desired', patch}));
    }
    return twin;
  }

  async open() {
    await this.client.open();
    this.listen();
    return {};
  }

  async twin_get() {
    const twin = await this.getTwin();
    return {desired: plain(twin.properties.desired), reported: plain(twin.properties.reported)};
  }

  async twin_patch(args) {
    if (args.patch === null || typeof args.patch !== 'object') {
      throw new Error('twin_patch needs "patch": an object of reported properties');
    }
    const twin = this.twin || (await this.getTwin());
    await new Promise(
        (resolve, reject) =>
            twin.properties.reported.update(args.patch, (err) => (err ? reject(err) : resolve())));
    return {};
  }

  async send(args) {
    requireString(args, 'output');
    const msg = buildMessage(args, '');
    await this.client.sendOutputEvent(args.output, msg);
    return {messageId: msg.messageId ?? null};
  }

  async send_batch(args) {
    requireString(args, 'output');
    requireString(args, 'prefix');
    const count = Number(args.count);
    const window = Math.max(1, Number(args.window || 1));
    if (!Number.isInteger(count) || count < 0) {
      throw new Error('send_batch needs "count": a non-negative integer');
    }
    let next = 0;
    let sent = 0;
    const errors = [];
    const worker = async () => {
      while (next < count) {
        const i = next++;
        const msg = buildMessage(
            {...args, messageId: `${args.prefix}-${i}`},
            args.body !== undefined ? args.body : JSON.stringify({seq: i}));
        try {
          await this.client.sendOutputEvent(args.output, msg);
          sent++;
        } catch (err) {
          errors.push({messageId: msg.messageId, ...describeError(err)});
        }
      }
    };
    await Promise.all(Array.from({length: Math.min(window, Math.max(count, 1))}, worker));
    return {sent, failed: errors.length, errors: errors.slice(0, 10)};
  }

  async invoke(args) {
    requireString(args, 'deviceId');
    requireString(args, 'methodName');
    const params = {methodName: args.methodName, payload: args.payload ?? null};
    if (args.responseTimeoutInSeconds !== undefined) {
      params.responseTimeoutInSeconds = Number(args.responseTimeoutInSeconds);
    }
    if (args.connectTimeoutInSeconds !== undefined) {
      params.connectTimeoutInSeconds = Number(args.connectTimeoutInSeconds);
    }
    const result = args.moduleId ?
        await this.client.invokeMethod(args.deviceId, args.moduleId, params) :
        await this.client.invokeMethod(args.deviceId, params);
    return {status: result.status, payload: result.payload ?? null};
  }

  async close() {
    await this.client.close();
    return {};
  }
}

// Twin property collections have methods (reported.update) mixed in; keep the data only.
function plain(value) {
  return JSON.parse(JSON.stringify(value || {}));
}

function requireString(args, key) {
  if (typeof args[key] !== 'string' || args[key].length === 0) {
    throw new Error(`"${key}" must be a non-empty string`);
  }
}

function parseConnectionString(text) {
  const out = {};
  for (const part of text.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0) out[part.slice(0, eq)] = part.slice(eq + 1);
  }
  return out;
}

const OPS = new Set(['open', 'twin_get', 'twin_patch', 'send', 'send_batch', 'invoke', 'close']);

async function handle(module, line) {
  let request;
  try {
    request = JSON.parse(line);
  } catch (err) {
    emit({op: null, ok: false, error: {message: `not a JSON line: ${err.message}`}});
    return;
  }
  const reply = {op: request.op, id: request.id ?? null};
  if (!OPS.has(request.op)) {
    emit({
      ...reply,
      ok: false,
      error: {
        message: `unknown op ${JSON.stringify(request.op)}; ` +
            `known: ${[...OPS].join(', ')}`
      }
    });
    return;
  }
  try {
    const result = await module[request.op](request);
    emit({...reply, ok: true, ...result});
  } catch (err) {
    log(`${request.op} failed:`, err && err.stack ? err.stack : err);
    emit({...reply, ok: false, error: describeError(err)});
  }
}

function main() {
  if (!process.env.EdgeHubConnectionString && !process.env.IotHubConnectionString) {
    log('EdgeHubConnectionString is not set; ModuleClient.fromEnvironment would look for a ' +
        'workload socket (IOTEDGE_WORKLOADURI) instead');
  }
  ModuleClient.fromEnvironment(Mqtt, (err, client) => {
    if (err) {
      emit({event: 'error', error: describeError(err), during: 'fromEnvironment'});
      log('ModuleClient.fromEnvironment failed:', err.stack || err);
      process.exit(2);
    }
    if ((process.env.CAIRN_TEST_RETRY || '').toLowerCase() === 'none') {
      client.setRetryPolicy(new NoRetry());
    }
    const module = new Module(client);
    emit({event: 'ready', deviceId: module.deviceId, moduleId: module.moduleId});
    const pending = new Set();
    const rl = readline.createInterface({input: process.stdin, terminal: false});
    rl.on('line', (line) => {
      if (!line.trim()) return;
      const p = handle(module, line).finally(() => pending.delete(p));
      pending.add(p);
    });
    rl.on('close', async () => {
      // No more requests: let the ones in flight answer, then leave. The client may still
      // hold a socket and timers, so exit explicitly rather than wait for the loop to drain.
      await Promise.allSettled([...pending]);
      try {
        await Promise.race([client.close(), new Promise((r) => setTimeout(r, 2000))]);
      } catch (_) {
        // already closed or never opened
      }
      emit({event: 'exit'});
      process.exit(0);
    });
  });
}

main();
