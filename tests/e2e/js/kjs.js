// kafkajs (a JavaScript implementation of the Kafka protocol, independent of librdkafka and
// the JVM client) against a shardlog broker. Driven by tests/e2e/test_kafkajs.py:
//
//   node kjs.js admin|produce|group BROKER TOPIC [GROUP]
//
// Each mode runs one scenario, checks what it can check by itself (it throws on any client
// error) and prints one JSON object with what it saw; the Python test asserts on that.
'use strict'

const { Kafka, logLevel, CompressionTypes } = require('kafkajs')

const [mode, broker, topic, group] = process.argv.slice(2)
if (!mode || !broker || !topic) {
  console.error('usage: node kjs.js admin|produce|group BROKER TOPIC [GROUP]')
  process.exit(2)
}

const kafka = new Kafka({
  clientId: 'shardlog-e2e-kafkajs',
  brokers: [broker],
  logLevel: logLevel.WARN,
  connectionTimeout: 5000,
  requestTimeout: 15000,
  retry: { retries: 5, initialRetryTime: 100 },
})

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

async function until(what, timeoutMs, check) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const v = await check()
    if (v) return v
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(100)
  }
}

// CreateTopics, Metadata, DescribeConfigs, CreatePartitions, ListOffsets, DeleteTopics.
async function admin() {
  const a = kafka.admin()
  await a.connect()
  try {
    const created = await a.createTopics({
      waitForLeaders: true,
      topics: [{ topic, numPartitions: 3, configEntries: [{ name: 'retention.ms', value: '3600000' }] }],
    })
    const again = await a.createTopics({ topics: [{ topic, numPartitions: 3 }] })
    const listed = (await a.listTopics()).includes(topic)
    const md = await a.fetchTopicMetadata({ topics: [topic] })
    const partitions = md.topics[0].partitions.map((p) => p.partitionId).sort()
    const leaders = md.topics[0].partitions.every((p) => p.leader >= 0)
    const cfg = await a.describeConfigs({
      includeSynonyms: false,
      resources: [{ type: 2 /* TOPIC */, name: topic }],
    })
    const retention = cfg.resources[0].configEntries.find((c) => c.configName === 'retention.ms')
    await a.createPartitions({ topicPartitions: [{ topic, count: 5 }] })
    const grown = (await a.fetchTopicMetadata({ topics: [topic] })).topics[0].partitions.length
    const offsets = await a.fetchTopicOffsets(topic)
    // DeleteRecords: before offset 10 of partition 0, everything (-1) of partition 1.
    const p = kafka.producer({ allowAutoTopicCreation: false })
    await p.connect()
    await p.send({ topic, acks: -1, messages: Array.from({ length: 40 }, (_, i) => ({ partition: i % 2, value: `r${i}` })) })
    await p.disconnect()
    await a.deleteTopicRecords({ topic, partitions: [{ partition: 0, offset: '10' }, { partition: 1, offset: '-1' }] })
    const trimmed = (await a.fetchTopicOffsets(topic)).filter((o) => o.partition < 2)
      .map((o) => ({ partition: o.partition, low: o.low, high: o.high }))
    await a.deleteTopics({ topics: [topic], timeout: 10000 })
    const gone = await until('the deleted topic to leave the listing', 10000, async () =>
      !(await a.listTopics()).includes(topic))
    return {
      created,
      created_again: again,
      listed,
      partitions,
      leaders,
      retention_ms: retention && retention.configValue,
      grown,
      offsets: offsets.map((o) => ({ partition: o.partition, low: o.low, high: o.high })),
      trimmed,
      gone,
    }
  } finally {
    await a.disconnect()
  }
}

// 300 records with acks 0, 1 and all, then 300 with an idempotent producer (gzip), read back
// by a group-less pass over every partition.
async function produce() {
  const a = kafka.admin()
  await a.connect()
  await a.createTopics({ waitForLeaders: true, topics: [{ topic, numPartitions: 2 }] })
  await a.disconnect()

  const sent = []
  const plain = kafka.producer({ allowAutoTopicCreation: false })
  await plain.connect()
  const acked = {}
  for (const acks of [0, 1, -1]) {
    const messages = []
    for (let i = 0; i < 100; i++) {
      const value = `acks${acks}-${i}`
      messages.push({ key: `k${i % 7}`, value, headers: { acks: String(acks) } })
      sent.push(value)
    }
    const res = await plain.send({ topic, acks, messages })
    // acks=0 gets no answer, so no offsets; the others get one base offset per partition.
    acked[acks] = res.map((r) => ({ partition: r.partition, errorCode: r.errorCode, baseOffset: r.baseOffset }))
  }
  await plain.disconnect()

  const idem = kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false })
  await idem.connect()
  for (let b = 0; b < 3; b++) {
    const messages = []
    for (let i = 0; i < 100; i++) {
      const value = `idem-${b}-${i}`
      messages.push({ key: `k${i % 5}`, value })
      sent.push(value)
    }
    await idem.send({ topic, acks: -1, compression: CompressionTypes.GZIP, messages })
  }
  await idem.disconnect()

  // Read everything back with a consumer group of one, from the beginning.
  const got = []
  const c = kafka.consumer({ groupId: `${topic}-reader`, sessionTimeout: 10000, heartbeatInterval: 500, maxWaitTimeInMs: 200 })
  await c.connect()
  await c.subscribe({ topics: [topic], fromBeginning: true })
  await c.run({
    eachMessage: async ({ partition, message }) => {
      got.push({ partition, offset: Number(message.offset), key: message.key.toString(), value: message.value.toString() })
    },
  })
  await until('every produced record', 30000, async () => got.length >= sent.length)
  await sleep(300) // anything extra (a duplicate) would arrive now
  await c.disconnect()

  // Per-key order: the values of one key, in offset order, follow the order they were sent.
  const byKeyOrdered = checkKeyOrder(got)
  return { sent: sent.length, got: got.length, unique: new Set(got.map((g) => g.value)).size,
    missing: sent.filter((v) => !got.some((g) => g.value === v)).slice(0, 10),
    acked, byKeyOrdered }
}

function checkKeyOrder(got) {
  const sorted = [...got].sort((x, y) => x.partition - y.partition || x.offset - y.offset)
  const last = {}
  for (const r of sorted) {
    const [prefix, n] = splitSeq(r.value)
    const k = `${prefix}|${r.key}`
    if (k in last && last[k] >= n) return false
    last[k] = n
  }
  return true
}

function splitSeq(value) {
  const i = value.lastIndexOf('-')
  return [value.slice(0, i), Number(value.slice(i + 1))]
}

// A group of two consumers on 4 partitions: the first gets all 4, the second joining makes the
// group rebalance to 2 + 2; every record is seen, committed offsets reach the log end, and a new
// member of the group resumes after them.
async function groupScenario() {
  const gid = group || `${topic}-g`
  const a = kafka.admin()
  await a.connect()
  await a.createTopics({ waitForLeaders: true, topics: [{ topic, numPartitions: 4 }] })

  const p = kafka.producer({ allowAutoTopicCreation: false })
  await p.connect()
  const produceRange = async (from, to) => {
    const messages = []
    for (let i = from; i < to; i++) messages.push({ key: `k${i}`, value: `v${i}` })
    await p.send({ topic, acks: -1, messages })
  }

  const seen = { a: [], b: [] }
  const assigned = { a: [], b: [] }
  const mk = (name) => {
    const c = kafka.consumer({
      groupId: gid, sessionTimeout: 10000, rebalanceTimeout: 10000, heartbeatInterval: 300,
      maxWaitTimeInMs: 200,
    })
    c.on(c.events.GROUP_JOIN, (e) => {
      assigned[name].push((e.payload.memberAssignment[topic] || []).slice().sort())
    })
    return c
  }
  const ca = mk('a')
  await ca.connect()
  await ca.subscribe({ topics: [topic], fromBeginning: true })
  await ca.run({ autoCommitInterval: 200, eachMessage: async ({ message }) => { seen.a.push(message.value.toString()) } })
  await until('consumer a to join', 20000, async () => assigned.a.length >= 1)
  await produceRange(0, 200)
  await until('a to read the first 200', 20000, async () => new Set(seen.a).size >= 200)

  const cb = mk('b')
  await cb.connect()
  await cb.subscribe({ topics: [topic], fromBeginning: true })
  await cb.run({ autoCommitInterval: 200, eachMessage: async ({ message }) => { seen.b.push(message.value.toString()) } })
  await until('the rebalance to two members', 30000, async () =>
    assigned.b.length >= 1 && assigned.a.length >= 2 &&
    assigned.a[assigned.a.length - 1].length + assigned.b[assigned.b.length - 1].length === 4)
  const described = await a.describeGroups([gid])
  await produceRange(200, 400)
  await until('all 400 records', 30000, async () => new Set([...seen.a, ...seen.b]).size >= 400)
  // The members commit every 200 ms (a commit that meets a rebalance is retried by the next).
  const atEnds = async () => {
    const c = await a.fetchOffsets({ groupId: gid, topics: [topic] })
    const e = await a.fetchTopicOffsets(topic)
    const high = Object.fromEntries(e.map((x) => [x.partition, x.high]))
    return c[0].partitions.every((x) => x.offset === high[x.partition])
  }
  await until('the committed offsets to reach the log ends', 20000, atEnds)
  await ca.disconnect() // leaves the group
  await cb.disconnect()

  const committed = await a.fetchOffsets({ groupId: gid, topics: [topic] })
  const ends = await a.fetchTopicOffsets(topic)
  const groups = await a.listGroups()

  // A new member resumes after the committed offsets: it sees only records produced later.
  await produceRange(400, 410)
  const after = []
  const cc = kafka.consumer({ groupId: gid, sessionTimeout: 10000, heartbeatInterval: 300, maxWaitTimeInMs: 200 })
  await cc.connect()
  await cc.subscribe({ topics: [topic], fromBeginning: true })
  await cc.run({ eachMessage: async ({ message }) => { after.push(message.value.toString()) } })
  await until('the 10 new records', 30000, async () => after.length >= 10)
  await sleep(300)
  await cc.disconnect()
  await p.disconnect()
  await a.disconnect()

  const d = described.groups[0]
  return {
    assigned_a: assigned.a,
    assigned_b: assigned.b,
    described: { state: d.state, protocol: d.protocol, members: d.members.length,
      hosts: d.members.map((m) => m.clientHost) },
    seen_unique: new Set([...seen.a, ...seen.b]).size,
    committed: committed[0].partitions.map((x) => ({ partition: x.partition, offset: Number(x.offset) }))
      .sort((x, y) => x.partition - y.partition),
    ends: ends.map((e) => ({ partition: e.partition, high: Number(e.high) })).sort((x, y) => x.partition - y.partition),
    listed: groups.groups.some((g) => g.groupId === gid),
    after,
  }
}

const modes = { admin, produce, group: groupScenario }

;(async () => {
  if (!modes[mode]) throw new Error(`unknown mode ${mode}`)
  const out = await modes[mode]()
  process.stdout.write(JSON.stringify(out) + '\n')
})().then(
  () => process.exit(0),
  (e) => {
    console.error(`kjs ${mode} failed: ${e && e.stack ? e.stack : e}`)
    process.exit(1)
  },
)
