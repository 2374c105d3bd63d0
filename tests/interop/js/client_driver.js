#!/usr/bin/env node
"use strict"
/*
 * Interop driver: a ws-wrapper 3.0.3 client (Node, `ws` as the WebSocket
 * implementation), remote-controlled by JSON lines on stdin.
 *
 *   node client_driver.js ws://127.0.0.1:PORT/path
 *
 * stdout carries only protocol lines (one JSON object per line):
 *   - `{"ready":true}` once the WebSocket is open;
 *   - exactly one reply per command, carrying the command's "id".
 * Commands run concurrently, so replies can come out of order: match them
 * by "id". Diagnostics go to stderr. See README.md for the command list.
 */

const readline = require("readline")
const WebSocket = require("ws")

const url = process.argv[2]
if (!url) {
	process.stderr.write("usage: node client_driver.js ws://HOST:PORT/PATH\n")
	process.exit(2)
}

function log(...parts) {
	process.stderr.write("[client_driver] " + parts.join(" ") + "\n")
}

function out(obj) {
	process.stdout.write(JSON.stringify(obj) + "\n")
}

// Turns any JavaScript value into something JSON.stringify accepts without
// throwing and without silently dropping information we care about.
function jsonSafe(value, seen = new WeakSet()) {
	if (value === undefined) return null
	if (value === null) return null
	switch (typeof value) {
		case "string":
		case "boolean":
			return value
		case "number":
			return Number.isFinite(value) ? value : String(value)
		case "bigint":
			return value.toString()
		case "function":
		case "symbol":
			return String(value)
	}
	if (seen.has(value)) return "[Circular]"
	seen.add(value)
	if (Array.isArray(value)) return value.map((v) => jsonSafe(v, seen))
	const result = {}
	if (value instanceof Error) {
		// Own properties (ws-wrapper copies the received error object's keys
		// onto the Error), plus the non-enumerable name/message; no stack.
		result.name = value.name
		result.message = value.message
	}
	for (const key of Object.keys(value)) {
		if (key === "stack") continue
		result[key] = jsonSafe(value[key], seen)
	}
	return result
}

// Describes a rejection reason exactly enough for Python-side assertions.
function describeError(err) {
	const isError = err instanceof Error
	let message
	if (isError) {
		message = String(err.message)
	} else if (typeof err === "string") {
		message = err
	} else {
		try {
			message = JSON.stringify(err)
		} catch (e) {
			message = String(err)
		}
		if (message === undefined) message = String(err)
	}
	return {
		message,
		name: isError ? err.name : null,
		isError,
		type: err === null ? "null" : typeof err,
		raw: jsonSafe(err),
	}
}

function main(WebSocketWrapper) {
	const wrapper = new WebSocketWrapper()

	// --- events received from the peer, in arrival order -------------------
	let recorded = []
	let waiters = []
	function record(channel, event, args) {
		recorded.push([channel, event, jsonSafe(args)])
		waiters = waiters.filter((w) => !w.check())
	}
	function recordOn(channelObj, channelName, eventName) {
		channelObj.on(eventName, function (...args) {
			record(channelName, eventName, args)
		})
	}
	recordOn(wrapper, null, "news")
	recordOn(wrapper, null, "notify")
	const room = wrapper.of("room")
	recordOn(room, "room", "news")
	recordOn(room, "room", "message")

	// --- request handlers for server -> client requests ---------------------
	wrapper.on("answer", (q) => "js:" + q)
	wrapper.on("answer_fail", (q) => {
		throw new Error("js refused " + q)
	})

	// --- connection lifecycle -----------------------------------------------
	let connected = false
	let closed = false
	let closeInfo = null
	const closeWaiters = []
	wrapper.on("open", () => {
		connected = true
		log("connected to", url)
		out({ ready: true })
	})
	wrapper.on("close", (event, wasOpen) => {
		connected = false
		closed = true
		closeInfo = {
			code: event && event.code,
			reason: event && String(event.reason || ""),
			wasOpen: !!wasOpen,
		}
		log("socket closed:", JSON.stringify(closeInfo))
		if (!wasOpen) {
			log("could not connect to", url)
			process.exit(1)
		}
		closeWaiters.splice(0).forEach((fn) => fn())
	})

	const ws = new WebSocket(url)
	// ws-wrapper installs `onerror`; this extra listener only adds a log line.
	ws.on("error", (err) => log("socket error:", err && err.message))
	wrapper.bind(ws)

	function channelOf(name) {
		return name == null ? wrapper : wrapper.of(name)
	}

	function waitClosed() {
		return new Promise((resolve) => {
			if (closed) resolve()
			else closeWaiters.push(resolve)
		})
	}

	// --- commands ------------------------------------------------------------
	const ops = {
		async request(cmd) {
			const ch = channelOf(cmd.channel)
			if (cmd.timeout != null) ch.timeout(cmd.timeout)
			try {
				const value = await ch.request(cmd.event, ...(cmd.args || []))
				return { ok: true, value: jsonSafe(value) }
			} catch (err) {
				return { ok: false, error: describeError(err) }
			}
		},
		async emit(cmd) {
			channelOf(cmd.channel).emit(cmd.event, ...(cmd.args || []))
			return { ok: true }
		},
		async events() {
			const value = recorded
			recorded = []
			return { ok: true, value }
		},
		wait_events(cmd) {
			const count = cmd.count == null ? 1 : cmd.count
			const timeout = cmd.timeout == null ? 5000 : cmd.timeout
			return new Promise((resolve) => {
				const waiter = {
					check() {
						if (recorded.length < count) return false
						clearTimeout(waiter.timer)
						const value = recorded
						recorded = []
						resolve({ ok: true, value })
						return true
					},
				}
				if (waiter.check()) return
				waiter.timer = setTimeout(() => {
					waiters = waiters.filter((w) => w !== waiter)
					// Nothing is cleared on timeout; "value" shows what we have.
					resolve({
						ok: false,
						error: {
							message: `timed out waiting for ${count} events (have ${recorded.length})`,
						},
						value: recorded.slice(),
					})
				}, timeout)
				waiters.push(waiter)
			})
		},
		async state() {
			return { ok: true, value: { connected, closed, close: closeInfo } }
		},
		async close(cmd) {
			if (!closed) {
				wrapper.disconnect(cmd.code == null ? 1000 : cmd.code, cmd.reason)
			}
			await waitClosed()
			return { ok: true, exit: true }
		},
	}

	async function handle(line) {
		line = line.trim()
		if (!line) return
		let cmd
		try {
			cmd = JSON.parse(line)
		} catch (e) {
			log("bad command line:", line)
			out({ id: null, ok: false, error: { message: "invalid JSON command" } })
			return
		}
		const id = cmd && cmd.id !== undefined ? cmd.id : null
		const op = cmd && ops[cmd.op]
		let reply
		if (!op) {
			reply = { ok: false, error: { message: `unknown op ${JSON.stringify(cmd && cmd.op)}` } }
		} else {
			try {
				reply = await op(cmd)
			} catch (err) {
				reply = { ok: false, error: describeError(err) }
			}
		}
		const exit = reply.exit
		delete reply.exit
		out({ id, ...reply })
		if (exit) {
			process.stdout.write("", () => process.exit(0))
		}
	}

	const rl = readline.createInterface({ input: process.stdin, terminal: false })
	rl.on("line", (line) => {
		handle(line).catch((err) => log("internal error:", err && err.stack))
	})
	rl.on("close", () => {
		log("stdin closed, exiting")
		if (!closed && ws.readyState <= WebSocket.OPEN) {
			wrapper.disconnect(1000)
			setTimeout(() => process.exit(0), 1000).unref()
			waitClosed().then(() => process.exit(0))
		} else {
			process.exit(0)
		}
	})
}

import("ws-wrapper")
	.then((mod) => main(mod.default))
	.catch((err) => {
		log("startup failed:", err && err.stack)
		process.exit(1)
	})
