// The chat page: the npm ws-wrapper client (3.0.3) talking to the trio_wswrapper chat server.
//
// - the server asks this page for a nickname (a server-to-client request, answered from a dialog);
// - each room is a named channel; joining, saying and the history are requests on it;
// - typing notices are events; the room's history arrives as a run of "history" events
//   ended by "history-end" before the "history" request resolves;
// - when the connection drops, a banner says so and the page reconnects with backoff, then
//   says hello again (with the same nickname) and rejoins its room.
import WebSocketWrapper from "ws-wrapper"

const $ = (id) => document.getElementById(id)
const wsUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`
const socket = new WebSocketWrapper(null, { requestTimeout: 15000 })

let nick = null // ours, once the server accepted it
let room = null // the room shown
let attempts = 0 // failed connection attempts in a row
let reconnectTimer = null
const shown = new Set() // message ids in the list, so history and live messages never repeat
const typists = new Map() // nick -> timer clearing their notice

// --- connection ---------------------------------------------------------------------------

function connect() {
	clearTimeout(reconnectTimer)
	setStatus("connecting", "connecting…")
	socket.bind(new WebSocket(wsUrl))
}

socket.on("open", async () => {
	attempts = 0
	setStatus("online", "online")
	hideBanner()
	try {
		const welcome = await socket.request("hello")
		nick = welcome.nick
		$("me").textContent = nick
		renderRooms(welcome.rooms)
		await enterRoom(room || welcome.rooms[0])
	} catch (err) {
		showBanner(`The server refused us: ${describe(err)}`)
	}
})

socket.on("close", (event, opened) => {
	// Requests still waiting will never be answered by this connection.
	socket.abort()
	setComposer(false)
	attempts++
	const delay = Math.min(10000, 500 * 2 ** Math.min(attempts - 1, 5)) * (0.5 + Math.random() / 2)
	const seconds = (delay / 1000).toFixed(1)
	if (opened) {
		setStatus("offline", "offline")
		showBanner(
			`Connection to the server lost (code ${event.code}${event.reason ? ": " + event.reason : ""}). ` +
				`Reconnecting in ${seconds} s…`
		)
	} else {
		setStatus("offline", "offline")
		showBanner(`Cannot reach the chat server at ${location.host}. Retrying in ${seconds} s…`)
	}
	reconnectTimer = setTimeout(connect, delay)
})

// The server asks for our nickname; `problem` says what was wrong with the last answer.
socket.on("nickname", (problem) => {
	if (nick && !problem) return nick // reconnecting: keep the same name
	return askNickname(problem)
})

function askNickname(problem) {
	const dialog = $("nick-dialog")
	$("nick-problem").textContent = problem || ""
	$("nick").value = nick || ""
	return new Promise((resolve) => {
		dialog.addEventListener("close", () => resolve($("nick").value.trim()), { once: true })
		if (!dialog.open) dialog.showModal()
		$("nick").focus()
	})
}

// --- rooms ----------------------------------------------------------------------------------

const wired = new Set()

function channel(name) {
	const ch = socket.of(name)
	if (wired.has(name)) return ch
	wired.add(name)
	ch.on("message", (m) => name === room && addMessage(m, false))
	ch.on("history", (m) => name === room && addMessage(m, true))
	ch.on("history-end", (count) => name === room && count === 0 && addNotice("No messages yet."))
	ch.on("typing", (who) => name === room && showTyping(who))
	ch.on("joined", (who) => name === room && (addNotice(`${who} joined`), addMember(who)))
	ch.on("left", (who) => name === room && (addNotice(`${who} left`), removeMember(who)))
	return ch
}

async function enterRoom(name) {
	if (room && room !== name && socket.isConnected) {
		channel(room).request("leave").catch(() => {})
	}
	room = name
	$("room-title").textContent = `# ${name}`
	for (const li of $("rooms").children) li.classList.toggle("current", li.dataset.room === name)
	$("messages").replaceChildren()
	$("typing").textContent = ""
	shown.clear()
	const ch = channel(name)
	const info = await ch.request("join")
	renderMembers(info.members)
	await ch.request("history", 50) // the history events arrive before this resolves
	setComposer(true)
}

function renderRooms(names) {
	$("rooms").replaceChildren(
		...names.map((name) => {
			const li = document.createElement("li")
			li.textContent = `# ${name}`
			li.dataset.room = name
			li.classList.toggle("current", name === room)
			li.addEventListener("click", () => name !== room && enterRoom(name).catch(showFailure))
			return li
		})
	)
}

function renderMembers(members) {
	$("members").replaceChildren()
	for (const who of members) addMember(who)
}

function addMember(who) {
	if ([...$("members").children].some((li) => li.textContent === who)) return
	const li = document.createElement("li")
	li.textContent = who
	$("members").append(li)
}

function removeMember(who) {
	for (const li of [...$("members").children]) if (li.textContent === who) li.remove()
}

// --- messages ---------------------------------------------------------------------------------

function addMessage(m, fromHistory) {
	if (shown.has(m.id)) return
	shown.add(m.id)
	const li = document.createElement("li")
	li.className = fromHistory ? "message history" : "message"
	const time = document.createElement("span")
	time.className = "time"
	time.textContent = new Date(m.ts * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
	const who = document.createElement("span")
	who.className = "nick"
	who.textContent = m.nick
	const text = document.createElement("span")
	text.className = "text"
	text.textContent = m.text
	li.append(time, who, text)
	$("messages").append(li)
	li.scrollIntoView({ block: "end" })
	clearTyping(m.nick)
}

function addNotice(text) {
	const li = document.createElement("li")
	li.className = "notice"
	li.textContent = text
	$("messages").append(li)
}

function showTyping(who) {
	clearTimeout(typists.get(who))
	typists.set(
		who,
		setTimeout(() => clearTyping(who), 3000)
	)
	renderTyping()
}

function clearTyping(who) {
	clearTimeout(typists.get(who))
	if (typists.delete(who)) renderTyping()
}

function renderTyping() {
	const names = [...typists.keys()]
	$("typing").textContent =
		names.length === 0 ? "" : `${names.join(", ")} ${names.length === 1 ? "is" : "are"} typing…`
}

// --- composing --------------------------------------------------------------------------------

let lastTyping = 0

$("text").addEventListener("input", () => {
	const now = Date.now()
	if (room && socket.isConnected && now - lastTyping > 1500) {
		lastTyping = now
		channel(room).emit("typing")
	}
})

$("composer").addEventListener("submit", async (event) => {
	event.preventDefault()
	const text = $("text").value.trim()
	if (!text || !room) return
	try {
		await channel(room).request("say", text)
		$("text").value = ""
		lastTyping = 0
	} catch (err) {
		showFailure(err)
	}
})

function setComposer(enabled) {
	$("text").disabled = !enabled
	$("send").disabled = !enabled
	if (enabled) $("text").focus()
}

// --- status -------------------------------------------------------------------------------------

function setStatus(kind, text) {
	const status = $("status")
	status.className = `status ${kind}`
	status.textContent = text
}

function showBanner(text) {
	$("banner").textContent = text
	$("banner").hidden = false
}

function hideBanner() {
	$("banner").hidden = true
}

function describe(err) {
	return (err && err.message) || String(err)
}

function showFailure(err) {
	addNotice(`Not sent: ${describe(err)}`)
}

connect()
