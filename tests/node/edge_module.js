'use strict';
// An IoT Edge module as a user writes one: the official Node SDK with
// ModuleClient.fromEnvironment(Mqtt) and nothing else — no connection string, no CA file. It
// finds the hub, the CA and its credentials through the IoT Edge environment and the workload API
// that the runtime (cairnd's agent) hands it.
//
// What it does, so a test can observe each SDK feature:
//   - on connect, reports {"started": {pid, moduleId, generationId}} in its twin;
//   - sends {"hello": moduleId} once to output "hello" (and again every CAIRN_TEST_HELLO_MS
//     if set);
//   - on input "in": reports {"lastInput": {body, from}} and forwards the body to output "out";
//   - on a desired-properties patch: reports {"seenDesired": patch};
//   - direct method "echo": 200 {"echo": payload, "module": moduleId};
//   - CAIRN_TEST_CRASH_AFTER_MS: exits with code 3 after that many milliseconds (a crash).
// Logs go to stdout/stderr (the runtime keeps them: `cairn logs MODULE`).

require('./connect_map');

const {ModuleClient, Message} = require('azure-iot-device');
const {Mqtt} = require('azure-iot-device-mqtt');

function log(...args) {
  console.log(`[edge_module ${new Date().toISOString()}] ${args.join(' ')}`);
}

const crashAfter = Number(process.env.CAIRN_TEST_CRASH_AFTER_MS || 0);
if (crashAfter > 0) {
  setTimeout(() => {
    log(`crashing on purpose after ${crashAfter} ms`);
    process.exit(3);
  }, crashAfter);
}

process.on('SIGTERM', () => {
  log('SIGTERM: closing');
  process.exit(0);
});

ModuleClient.fromEnvironment(Mqtt, (err, client) => {
  if (err) {
    log('fromEnvironment failed:', err.message);
    process.exit(1);
  }
  const moduleId = process.env.IOTEDGE_MODULEID;
  client.on('error', (e) => log('client error:', e.message));
  client.open((openErr) => {
    if (openErr) {
      log('open failed:', openErr.message);
      process.exit(1);
    }
    log('connected');
    client.getTwin((twinErr, twin) => {
      if (twinErr) {
        log('getTwin failed:', twinErr.message);
        return;
      }
      const report = (patch) => twin.properties.reported.update(patch, (e) => {
        if (e) log('reported update failed:', e.message);
      });
      report({started: {pid: process.pid, moduleId,
                        generationId: process.env.IOTEDGE_MODULEGENERATIONID}});
      // Reported property names may not start with '$': the patch's $version stays out.
      twin.on('properties.desired', (patch) => {
        const seen = {};
        for (const [k, v] of Object.entries(patch)) {
          if (!k.startsWith('$')) seen[k] = v;
        }
        report({seenDesired: seen});
      });
      client.on('inputMessage', (input, msg) => {
        const body = msg.getData().toString();
        client.complete(msg, () => {});
        log(`input ${input}: ${body}`);
        if (input !== 'in') return;
        report({lastInput: {body, input}});
        client.sendOutputEvent('out', new Message(body), (e) => {
          if (e) log('forward failed:', e.message);
        });
      });
    });
    client.onMethod('echo', (request, response) => {
      response.send(200, {echo: request.payload, module: moduleId}, () => {});
    });
    const hello = () => client.sendOutputEvent(
        'hello', new Message(JSON.stringify({hello: moduleId})), (e) => {
          if (e) log('hello failed:', e.message);
          else log('hello sent');
        });
    hello();
    const every = Number(process.env.CAIRN_TEST_HELLO_MS || 0);
    if (every > 0) setInterval(hello, every);
  });
});
