// etcd3 (npm), a client nobody here wrote, against a running etch cluster over its gRPC
// front with mutual TLS. Prints one JSON line per step; tests/tests/etcd_clients.rs
// checks them. Connection from the environment: ETCD_ENDPOINTS (comma-separated
// https:// URLs), ETCD_CA, ETCD_CERT, ETCD_KEY.
'use strict';
const fs = require('fs');
const { Etcd3 } = require('etcd3');

function step(name, value) {
  console.log(JSON.stringify({ step: name, value }));
}

async function main() {
  const client = new Etcd3({
    hosts: process.env.ETCD_ENDPOINTS.split(','),
    credentials: {
      rootCertificate: fs.readFileSync(process.env.ETCD_CA),
      certChain: fs.readFileSync(process.env.ETCD_CERT),
      privateKey: fs.readFileSync(process.env.ETCD_KEY),
    },
  });
  try {
    await client.put('node/foo').value('bar');
    step('get', await client.get('node/foo').string());

    const swapped = await client
      .if('node/foo', 'Value', '==', 'bar')
      .then(client.put('node/foo').value('baz'))
      .else(client.put('node/foo').value('nope'))
      .commit();
    step('txn', { succeeded: swapped.succeeded, value: await client.get('node/foo').string() });

    await client.put('node/p/a').value('1');
    await client.put('node/p/b').value('2');
    step('prefix', await client.getAll().prefix('node/p/').strings());
    step('count', await client.getAll().prefix('node/').count());
    await client.delete().key('node/p/a');
    step('deleted', await client.getAll().prefix('node/p/').keys());

    // A watch sees a put and a delete, in order.
    const watcher = await client.watch().key('node/w').create();
    const events = [];
    const seen = new Promise((resolve) => {
      watcher.on('put', (kv) => { events.push(['put', kv.value.toString()]); });
      watcher.on('delete', () => { events.push(['delete']); resolve(); });
    });
    await client.put('node/w').value('1');
    await client.delete().key('node/w');
    await seen;
    await watcher.cancel();
    step('watch', events);

    // A lease: a key attached to it, kept alive, then revoked with it.
    const lease = client.lease(30, { autoKeepAlive: false });
    await lease.put('node/leased').value('v');
    const id = await lease.grant();
    step('lease-key', await client.get('node/leased').string());
    const ttl = await lease.keepaliveOnce();
    step('keepalive', Number(ttl.TTL) > 0 && Number(ttl.TTL) <= 30);
    await lease.revoke();
    step('revoked', await client.get('node/leased').string());
    step('lease-id', typeof id === 'string' && id.length > 0);

    // etcd's errors come back as the client's typed errors.
    const rev = Number((await client.get('node/foo').exec()).header.revision);
    await client.put('node/foo').value('later');
    await client.kv.compact({ revision: String(rev) });
    try {
      await client.get('node/foo').revision(rev - 1).string();
      step('compacted', 'no error');
    } catch (e) {
      step('compacted', e.constructor.name + ': ' + e.message);
    }
  } finally {
    client.close();
  }
}

main().then(
  () => step('done', true),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
