'use strict';
// Redirects outgoing TLS connections for tests, without changing what the SDKs see.
//
// The Azure IoT SDKs connect to fixed ports: MQTT to {GatewayHostName}:8883, module-to-module
// methods to https://{GatewayHostName}:443, the service SDK to https://{HostName}:443. Tests run
// cairnd and cairn-cloud on free loopback ports (several test files run at once), so the
// connection has to land somewhere else while the SDK keeps its host names: the TLS server
// name, the certificate check, the SAS token audience and the MQTT username stay exactly as the
// SDK builds them. Only the TCP destination changes.
//
// CAIRN_TEST_CONNECT_MAP is a comma-separated list of FROM=TO pairs, each side host:port:
//   localhost:8883=127.0.0.1:40123,localhost:443=127.0.0.1:40124,cairn.local:443=127.0.0.1:40125
// A connection to a host:port that is not listed goes where the SDK asked.
//
// Both mqtt.js (mqtts://) and Node's https agent open their sockets with tls.connect, looked up
// on the module object at call time, so replacing that one function covers every transport the
// harness uses.

const net = require('net');
const tls = require('tls');

function parseEndpoint(text, where) {
  const at = text.lastIndexOf(':');
  const host = text.slice(0, at).replace(/^\[(.*)\]$/, '$1');
  const port = Number(text.slice(at + 1));
  if (at <= 0 || !Number.isInteger(port) || port <= 0 || port > 65535) {
    throw new Error(
        `CAIRN_TEST_CONNECT_MAP: "${where}" is not host:port (expected e.g. ` +
        `localhost:8883=127.0.0.1:40123)`);
  }
  return {host, port};
}

function parseMap(text) {
  const map = new Map();
  for (const entry of (text || '').split(',')) {
    const trimmed = entry.trim();
    if (!trimmed) continue;
    const eq = trimmed.indexOf('=');
    if (eq < 0) {
      throw new Error(`CAIRN_TEST_CONNECT_MAP: "${trimmed}" has no "=" (expected FROM=TO)`);
    }
    const from = parseEndpoint(trimmed.slice(0, eq), trimmed);
    const to = parseEndpoint(trimmed.slice(eq + 1), trimmed);
    map.set(`${from.host.toLowerCase()}:${from.port}`, to);
  }
  return map;
}

const map = parseMap(process.env.CAIRN_TEST_CONNECT_MAP);

if (map.size > 0) {
  const originalConnect = tls.connect;
  tls.connect = function connectWithMap(...args) {
    // tls.connect(options[, cb]) is what mqtt.js and the https agent use; the
    // (port[, host][, options][, cb]) form is normalised so it is redirected too.
    let options;
    let rest;
    if (args[0] !== null && typeof args[0] === 'object') {
      options = {...args[0]};
      rest = args.slice(1);
    } else if (typeof args[0] === 'number' || typeof args[0] === 'string') {
      options = {port: args[0]};
      let i = 1;
      if (typeof args[i] === 'string') options.host = args[i++];
      if (args[i] !== null && typeof args[i] === 'object') Object.assign(options, args[i++]);
      rest = args.slice(i);
    } else {
      return originalConnect.apply(this, args);
    }
    const host = options.host || options.hostname || 'localhost';
    const port = Number(options.port || 443);
    const target = map.get(`${String(host).toLowerCase()}:${port}`);
    if (target) {
      // Verify the certificate against the name the SDK asked for, not the redirect target.
      if (!options.servername && net.isIP(host) === 0) options.servername = host;
      options.host = target.host;
      options.port = target.port;
      delete options.hostname;
    }
    return originalConnect.call(this, options, ...rest);
  };
}

module.exports = {parseMap};
