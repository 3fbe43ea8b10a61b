'use strict';
// One call of the official Azure IoT service SDK for Node (azure-iothub), for tests.
//
//   node service.js '<service connection string>' <op> '<json args>'
//
// Prints one JSON line: the result, or {"error": message, "name": ..., "statusCode": ...,
// "body": ...} with exit status 1 (2 for a usage error). The SDK connects to
// https://{HostName}:443; tests point that at their server with CAIRN_TEST_CONNECT_MAP (see
// connect_map.js) and make the server's CA trusted with NODE_EXTRA_CA_CERTS.
//
// Ops and their JSON arguments:
//   create_device        {deviceId, status?, authentication?, capabilities?}
//   get_device           {deviceId}
//   list_devices         {}
//   delete_device        {deviceId}
//   add_module           {deviceId, moduleId, authentication?, managedBy?}
//   get_module           {deviceId, moduleId}
//   get_twin             {deviceId}
//   update_twin          {deviceId, patch, etag?}            etag defaults to "*"
//   get_module_twin      {deviceId, moduleId}
//   update_module_twin   {deviceId, moduleId, patch, etag?}
//   invoke_device_method {deviceId, methodName, payload?, responseTimeoutInSeconds?,
//                         connectTimeoutInSeconds?}          -> {status, payload}
//   invoke_module_method {deviceId, moduleId, methodName, ...same}
//   apply_configuration  {deviceId, content}                 content: {modulesContent: ...}

require('./connect_map');

const {Registry, Client} = require('azure-iothub');

function print(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

// The SDK hands back model objects (Twin keeps a reference to the registry); a JSON round
// trip keeps the data and drops the rest, through their own toJSON where they have one.
function plain(value) {
  return value === undefined ? null : JSON.parse(JSON.stringify(value));
}

function fail(err) {
  const out = {error: String(err && err.message ? err.message : err)};
  if (err && err.name) out.name = err.name;
  const response = err && (err.response || (err.transportError && err.transportError.response));
  if (response && response.statusCode !== undefined) out.statusCode = response.statusCode;
  const body = err && (err.responseBody ?? err.transportError?.responseBody);
  if (body !== undefined && body !== null && body !== '') {
    try {
      out.body = typeof body === 'string' ? JSON.parse(body) : body;
    } catch (_) {
      out.body = String(body);
    }
  }
  print(out);
  process.exit(1);
}

function need(args, ...keys) {
  for (const k of keys) {
    if (typeof args[k] !== 'string' || args[k].length === 0) {
      throw new Error(`"${k}" must be a non-empty string`);
    }
  }
}

// Registry calls answer (err, result, httpResponse); turn that into a promise of the result
// with the HTTP status alongside.
function call(fn) {
  return new Promise((resolve, reject) => {
    fn((err, result, response) => {
      if (err) {
        reject(err);
      } else {
        resolve({result: plain(result), statusCode: response ? response.statusCode : null});
      }
    });
  });
}

function methodParams(args) {
  const params = {methodName: args.methodName, payload: args.payload ?? null};
  if (args.responseTimeoutInSeconds !== undefined) {
    params.responseTimeoutInSeconds = Number(args.responseTimeoutInSeconds);
  }
  if (args.connectTimeoutInSeconds !== undefined) {
    params.connectTimeoutInSeconds = Number(args.connectTimeoutInSeconds);
  }
  return params;
}

const OPS = {
  create_device: (r, a) => {
    need(a, 'deviceId');
    return call((cb) => r.create(a, cb));
  },
  get_device: (r, a) => {
    need(a, 'deviceId');
    return call((cb) => r.get(a.deviceId, cb));
  },
  list_devices: (r) => call((cb) => r.list(cb)),
  delete_device: (r, a) => {
    need(a, 'deviceId');
    return call((cb) => r.delete(a.deviceId, cb));
  },
  add_module: (r, a) => {
    need(a, 'deviceId', 'moduleId');
    return call((cb) => r.addModule(a, cb));
  },
  get_module: (r, a) => {
    need(a, 'deviceId', 'moduleId');
    return call((cb) => r.getModule(a.deviceId, a.moduleId, cb));
  },
  get_twin: (r, a) => {
    need(a, 'deviceId');
    return call((cb) => r.getTwin(a.deviceId, cb));
  },
  update_twin: (r, a) => {
    need(a, 'deviceId');
    return call((cb) => r.updateTwin(a.deviceId, a.patch, a.etag || '*', cb));
  },
  get_module_twin: (r, a) => {
    need(a, 'deviceId', 'moduleId');
    return call((cb) => r.getModuleTwin(a.deviceId, a.moduleId, cb));
  },
  update_module_twin: (r, a) => {
    need(a, 'deviceId', 'moduleId');
    return call((cb) => r.updateModuleTwin(a.deviceId, a.moduleId, a.patch, a.etag || '*', cb));
  },
  invoke_device_method: (r, a, connstr) => {
    need(a, 'deviceId', 'methodName');
    const client = Client.fromConnectionString(connstr);
    return call((cb) => client.invokeDeviceMethod(a.deviceId, methodParams(a), cb));
  },
  invoke_module_method: (r, a, connstr) => {
    need(a, 'deviceId', 'moduleId', 'methodName');
    const client = Client.fromConnectionString(connstr);
    return call((cb) => client.invokeDeviceMethod(a.deviceId, a.moduleId, methodParams(a), cb));
  },
  apply_configuration: (r, a) => {
    need(a, 'deviceId');
    if (!a.content || typeof a.content !== 'object') {
      throw new Error('"content" must be an object, e.g. {"modulesContent": {...}}');
    }
    return call((cb) => r.applyConfigurationContentOnDevice(a.deviceId, a.content, cb));
  },
};

async function main(argv) {
  if (argv.length < 2 || argv.length > 3) {
    print({
      error: `usage: node service.js '<connection string>' <op> ['<json args>']; ` +
          `ops: ${Object.keys(OPS).join(', ')}`
    });
    process.exit(2);
  }
  const [connstr, op, rawArgs] = argv;
  const handler = OPS[op];
  if (!handler) {
    print({error: `unknown op ${JSON.stringify(op)}; known: ${Object.keys(OPS).join(', ')}`});
    process.exit(2);
  }
  let args;
  try {
    args = rawArgs === undefined || rawArgs === '' ? {} : JSON.parse(rawArgs);
  } catch (err) {
    print({error: `arguments are not JSON: ${err.message}`});
    process.exit(2);
  }
  if (args === null || typeof args !== 'object' || Array.isArray(args)) {
    print({error: 'arguments must be a JSON object'});
    process.exit(2);
  }
  try {
    const registry = Registry.fromConnectionString(connstr);
    const {result, statusCode} = await handler(registry, args, connstr);
    print({ok: true, statusCode, result});
    process.exit(0);
  } catch (err) {
    fail(err);
  }
}

main(process.argv.slice(2));
