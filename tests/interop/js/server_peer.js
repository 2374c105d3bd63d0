#!/usr/bin/env node
"use strict"
/*
 * Interop peer: a ws-server-wrapper 1.6.1 server (which wraps each client in
 * its own dependency, ws-wrapper 2.2.0) on 127.0.0.1, on an ephemeral port
 * unless --port is given.
 *
 *   node server_peer.js [--port N] [--heartbeat-ms N] [--request-timeout-ms N]
 *
 * First stdout line: {"port":N}. Nothing else is written to stdout.
 * Connection logs go to stderr. Exits when stdin closes.
 * Options (defaults are ws-server-wrapper's own: 60000 and 120000 ms;
 * 0 disables either).
 */

const { WebSocketServer } = require("ws")
const WebSocketServerWrapper = require("ws-server-wrapper")

function log(...parts) {
	process.stderr.write("[server_peer] " + parts.join(" ") + "\n")
}

function parseOptions(argv) {
	const options = {}
	for (let i = 0; i < argv.length; i++) {
		const arg = argv[i]
		const value = Number(argv[i + 1])
		if (arg === "--heartbeat-ms" && Number.isFinite(value)) {
			options.heartbeatInterval = value
			i++
		} else if (arg === "--port" && Number.isInteger(value)) {
			options.port = value
			i++
		} else if (arg === "--request-timeout-ms" && Number.isFinite(value)) {
			options.requestTimeout = value
			i++
		} else {
			log("unknown argument:", arg)
			process.exit(2)
		}
	}
	return options
}

const { port: listenPort = 0, ...options } = parseOptions(process.argv.slice(2))
const wss = new WebSocketServer({ host: "127.0.0.1", port: listenPort })
const server = new WebSocketServerWrapper(wss, options)

let nextClientNo = 1
server.on("connection", (socket, req) => {
	const no = nextClientNo++
	socket.set("clientNo", no)
	const raw = req.socket
	log(
		`client #${no} connected from ${raw.remoteAddress}:${raw.remotePort}` +
			` path=${req.url} (clients: ${server.sockets.size})`
	)
})
server.on("disconnect", (socket) => {
	log(`client #${socket.get("clientNo")} disconnected (clients: ${server.sockets.size})`)
})
server.on("error", (err) => log("server error:", err && err.message))

// --- root channel handlers --------------------------------------------------
// Handlers run with `this` bound to the caller's ws-wrapper channel object;
// for root handlers that is the client's WebSocketWrapper itself.
server.on("echo", (x) => x)
server.on("add", (a, b) => a + b)
server.on("fail", (msg) => {
	throw new Error(msg)
})
server.on("fail_string", (s) => {
	throw s
})
server.on(
	"slow",
	(ms, v) => new Promise((resolve) => setTimeout(() => resolve(v), ms))
)
server.on("ask_client", function (q) {
	// `this` is the calling client's WebSocketWrapper (ws-wrapper 2.2.0).
	return this.request("answer", q)
})
server.on("please_broadcast", (event, arg) => {
	server.emit(event, arg)
	server.of("room").emit(event, arg)
	return server.sockets.size
})

const notified = []
server.on("notify", (x) => {
	notified.push(x)
})
server.on("last_notify", () => notified.slice())

// --- channel "math" -----------------------------------------------------------
server.of("math").on("mul", (a, b) => a * b)

wss.on("listening", () => {
	const { port } = wss.address()
	log(`listening on ws://127.0.0.1:${port}/`)
	process.stdout.write(JSON.stringify({ port }) + "\n")
})

// --- shutdown when stdin closes ------------------------------------------------
process.stdin.resume()
process.stdin.on("end", shutdown)
process.stdin.on("close", shutdown)

let shuttingDown = false
function shutdown() {
	if (shuttingDown) return
	shuttingDown = true
	log("stdin closed, shutting down")
	server.close()
	for (const socket of server.sockets) {
		socket.disconnect(1001, "server exiting")
	}
	const done = () => process.exit(0)
	if (server.sockets.size === 0) done()
	else {
		server.on("disconnect", () => {
			if (server.sockets.size === 0) done()
		})
		setTimeout(done, 1000).unref()
	}
}
