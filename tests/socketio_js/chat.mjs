// The real socket.io-client (the version the MERN front end ships) against Courier:
// two users sign up and chat live, presence, typing, a dropped connection recovered with what
// it missed exactly once. Usage: node chat.mjs http://127.0.0.1:PORT. Exits non-zero on failure.
import { io } from "socket.io-client";

const base = process.argv[2];
if (!base) {
  console.error("usage: node chat.mjs BASE_URL");
  process.exit(2);
}

let passed = 0;
function check(condition, what) {
  if (!condition) {
    throw new Error(`failed: ${what}`);
  }
  passed += 1;
  console.log(`ok - ${what}`);
}

/** Resolves with the first event `name` whose payload satisfies `test` (10 s at most). */
function waitFor(socket, name, test = () => true) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.off(name, listener);
      reject(new Error(`no ${name} within 10 s`));
    }, 10_000);
    function listener(...args) {
      if (test(...args)) {
        clearTimeout(timer);
        socket.off(name, listener);
        resolve(args[0]);
      }
    }
    socket.on(name, listener);
  });
}

async function signup(name) {
  const response = await fetch(`${base}/api/auth/signup`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      fullName: name,
      email: `${name.toLowerCase()}.${Date.now()}@example.com`,
      password: "secret123",
    }),
  });
  if (response.status !== 201) {
    throw new Error(`signup ${name}: ${response.status} ${await response.text()}`);
  }
  const user = await response.json();
  const cookie = response.headers
    .getSetCookie()
    .map((header) => header.split(";")[0])
    .find((pair) => pair.startsWith("jwt="));
  return { id: user._id, cookie, token: cookie.slice("jwt=".length) };
}

async function send(from, to, text) {
  const response = await fetch(`${base}/api/messages/send/${to.id}`, {
    method: "POST",
    headers: { "content-type": "application/json", cookie: from.cookie },
    body: JSON.stringify({ text }),
  });
  if (response.status !== 202) {
    throw new Error(`send: ${response.status} ${await response.text()}`);
  }
  return response.json();
}

const alice = await signup("Alice");
const bob = await signup("Bob");

// Alice as the MERN front end connects: the cookie, query.userId, WebSocket first.
const aliceSocket = io(base, {
  query: { userId: alice.id },
  extraHeaders: { cookie: alice.cookie },
  transports: ["websocket", "polling"],
  reconnectionDelay: 1000,
  reconnectionDelayMax: 5000,
});
// Bob with auth.token over the default transports (long-polling, then the upgrade); he
// reconnects by hand below, so that what he misses is certain.
const bobSocket = io(base, { auth: { token: bob.token }, reconnection: false });

try {
  const aliceOnline = waitFor(aliceSocket, "getOnlineUsers", (ids) => ids.includes(bob.id));
  await Promise.all([waitFor(aliceSocket, "connect"), waitFor(bobSocket, "connect")]);
  check(aliceSocket.connected && bobSocket.connected, "both clients connect");
  check((await aliceOnline).includes(alice.id), "presence lists both users");

  // A refused connection: another user's id.
  const impostor = io(base, {
    query: { userId: bob.id },
    extraHeaders: { cookie: alice.cookie },
    transports: ["websocket"],
    reconnection: false,
  });
  const refusal = await waitFor(impostor, "connect_error");
  check(/userId/.test(refusal.message), `another user's userId is refused (${refusal.message})`);
  impostor.close();

  // Live both ways, the sender's own copy included, senderId a plain id.
  const toBob = waitFor(bobSocket, "newMessage", (m) => m.text === "hi Bob");
  const ownCopy = waitFor(aliceSocket, "newMessage", (m) => m.text === "hi Bob");
  await send(alice, bob, "hi Bob");
  const received = await toBob;
  check(received.senderId === alice.id, "Bob gets Alice's message live, senderId a plain id");
  check((await ownCopy).receiverId === bob.id, "Alice gets her own copy");
  const toAlice = waitFor(aliceSocket, "newMessage", (m) => m.text === "hi Alice");
  await send(bob, alice, "hi Alice");
  check((await toAlice).senderId === bob.id, "Alice gets Bob's answer live");

  const typing = waitFor(aliceSocket, "typing");
  bobSocket.emit("typing", { receiverId: alice.id, isTyping: true });
  check((await typing).senderId === bob.id, "typing reaches the other side");
  const read = waitFor(aliceSocket, "messagesRead");
  bobSocket.emit("markRead", { userId: alice.id, seq: received.seq });
  check((await read).readerId === bob.id, "read receipts reach the other side");
  bobSocket.emit("message_reaction", { messageId: received._id, reaction: "+1", isAdd: true });
  check(bobSocket.io.engine.transport.name === "websocket", "Bob's polling upgraded to a websocket");

  // Bob's network drops. Alice sees him go, and writes twice while he is away.
  const gone = waitFor(aliceSocket, "getOnlineUsers", (ids) => !ids.includes(bob.id));
  const dropped = waitFor(bobSocket, "disconnect");
  bobSocket.io.engine.close();
  await dropped;
  check((await gone).includes(alice.id), "presence drops Bob when his connection does");
  for (const text of ["while away 1", "while away 2"]) {
    const saved = waitFor(aliceSocket, "newMessage", (m) => m.text === text);
    await send(alice, bob, text);
    await saved;
  }

  const texts = [];
  bobSocket.on("newMessage", (message) => texts.push(message.text));
  const back = waitFor(bobSocket, "connect");
  bobSocket.connect();
  await back;
  check(bobSocket.recovered === true, "Bob's connection state is recovered");
  const after = waitFor(bobSocket, "newMessage", (m) => m.text === "after");
  await send(alice, bob, "after");
  await after;
  check(
    JSON.stringify(texts) === JSON.stringify(["while away 1", "while away 2", "after"]),
    `Bob gets what he missed exactly once, then live (${JSON.stringify(texts)})`,
  );
  console.log(`socket.io-client: ${passed} passed, 0 failed`);
} finally {
  aliceSocket.close();
  bobSocket.close();
}
process.exit(0);
