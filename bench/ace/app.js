// The peer of the connect-axum sample for `bench/run.sh --vs-ace`: the issue-notes API on
// atlassian-connect-express (ACE) 11.5.3, with ACE's own tenant store (Sequelize on Postgres),
// ACE's signed-install check and ACE's JWT middleware, and the notes in a table of the same
// database read through a `pg` pool.
//
// Environment:
//   NODE_ENV=production      ACE's production mode (reads the "production" section of config.json)
//   PORT                     listening port
//   DATABASE_URL             the Postgres database of both ACE's store and the notes
//   AC_LOCAL_BASE_URL        the app's public base URL (descriptor baseUrl, install JWT audience)
//   CONNECT_KEYS_CDN_URL     where ACE fetches the install JWT's public key (`<url>/<kid>`)
//   DB_POOL_SIZE             connections of each of the two pools (default 10, as connect-axum)
//   REQUEST_LOG=off          no request log (default: one line per request on stdout)

const express = require("express");
const morgan = require("morgan");
const pg = require("pg");
const ace = require("atlassian-connect-express");

const poolSize = Number(process.env.DB_POOL_SIZE || 10);

const app = express();
app.set("env", process.env.NODE_ENV || "development");
// One line per request, like the Rust server's info-level request log.
if (process.env.REQUEST_LOG !== "off") {
  app.use(morgan(":date[iso] INFO :method :url :status :response-time ms"));
}
// ACE looks for the JWT in the query, then in the body, then in the Authorization header, and
// gives up when there is no parsed body: the body parsers always run, as in ACE's template.
app.use(express.json());
app.use(express.urlencoded({ extended: false }));

const addon = ace(app, {
  config: { production: { store: { pool: { max: poolSize } } } }
});

// The notes: int8 as a JS number, as connect-axum answers it.
const notes = new pg.Pool({
  connectionString: process.env.DATABASE_URL,
  max: poolSize,
  types: {
    getTypeParser(oid, format) {
      return oid === 20 ? Number : pg.types.getTypeParser(oid, format);
    }
  }
});

const ISSUE_KEY = /^[A-Z][A-Z0-9_]+-[0-9]+$/;
const MAX_NOTE_CHARS = 10000;

function toJson(row) {
  return {
    id: row.id,
    issueKey: row.issue_key,
    body: row.body,
    createdAt: row.created_at,
    author: row.author
  };
}

function badRequest(res, error, message) {
  res.status(400).json({ error, message });
}

// The Rust app's page: `limit` 1 to 100 (default 50), `cursor` base64url of the last id of the
// page before.
function parsePage(query) {
  let limit = 50;
  if (query.limit !== undefined) {
    limit = /^[0-9]+$/.test(query.limit) ? Number(query.limit) : 0;
    if (limit < 1 || limit > 100) return { error: "invalid_limit", message: "limit must be an integer from 1 to 100" };
  }
  let after = "0";
  if (query.cursor !== undefined) {
    const id = /^[A-Za-z0-9_-]+$/.test(query.cursor) ? Buffer.from(query.cursor, "base64url").toString() : "";
    if (!/^[0-9]+$/.test(id) || BigInt(id) < 1n || BigInt(id) > 9223372036854775807n) {
      return { error: "invalid_cursor", message: "the cursor is not one this API gave" };
    }
    after = id;
  }
  return { after, limit };
}

app.get("/api/issues/:issueKey/notes", addon.authenticate(), async (req, res) => {
  const issueKey = req.params.issueKey;
  if (issueKey.length > 255 || !ISSUE_KEY.test(issueKey)) {
    return badRequest(res, "invalid_issue_key", "the issue key must look like PROJ-123");
  }
  const page = parsePage(req.query);
  if (page.error) return badRequest(res, page.error, page.message);
  try {
    // The Rust app's statement, prepared once per connection: one more than the page tells
    // whether more follow.
    const { rows } = await notes.query({
      name: "list-notes",
      text:
        "select id, issue_key, body, author, created_at from note " +
        "where client_key = $1 and issue_key = $2 and id > $3 order by id limit $4",
      values: [req.context.clientKey, issueKey, page.after, page.limit + 1]
    });
    const more = rows.length > page.limit;
    const shown = rows.slice(0, page.limit);
    const next = more ? Buffer.from(String(shown[shown.length - 1].id)).toString("base64url") : null;
    res.json({ notes: shown.map(toJson), next });
  } catch (err) {
    addon.logger.error("list notes:", err.message);
    res.status(500).json({ error: "internal" });
  }
});

app.post("/api/issues/:issueKey/notes", addon.authenticate(), async (req, res) => {
  const issueKey = req.params.issueKey;
  if (issueKey.length > 255 || !ISSUE_KEY.test(issueKey)) {
    return badRequest(res, "invalid_issue_key", "the issue key must look like PROJ-123");
  }
  const body = req.body && req.body.body;
  if (typeof body !== "string" || body.length === 0 || [...body].length > MAX_NOTE_CHARS || body.includes("\0")) {
    return badRequest(res, "invalid_note", `the note body must be 1 to ${MAX_NOTE_CHARS} characters, without NUL`);
  }
  try {
    const { rows } = await notes.query({
      name: "create-note",
      text:
        "insert into note (client_key, issue_key, body, author, created_at) values ($1, $2, $3, $4, now()) " +
        "returning id, issue_key, body, author, created_at",
      values: [req.context.clientKey, issueKey, body, req.context.userAccountId || null]
    });
    res.status(201).json(toJson(rows[0]));
  } catch (err) {
    addon.logger.error("create note:", err.message);
    res.status(500).json({ error: "internal" });
  }
});

// ACE mounts POST /installed itself (signed-install check, then saves the tenant in its store);
// /uninstalled is the app's, behind the same asymmetric check.
app.post("/uninstalled", addon.authenticateInstall(), async (req, res) => {
  try {
    await addon.settings.del("clientInfo", req.body.clientKey);
    res.status(204).end();
  } catch (err) {
    addon.logger.error("uninstall:", err.message);
    res.status(500).json({ error: "internal" });
  }
});

async function start() {
  await notes.query(
    "create table if not exists note (" +
      "client_key text not null, id bigint generated always as identity, issue_key text not null, " +
      "body text not null, author text, created_at timestamptz not null, primary key (client_key, id))"
  );
  await notes.query(
    "create index if not exists note_client_key_issue_key on note (client_key, issue_key, id)"
  );
  // ACE creates its tables (Sequelize sync) when the store is made; serve once that is done.
  await addon.settings.connectionPromise;
  const port = addon.config.port();
  app.listen(port, "127.0.0.1", () => {
    addon.logger.info(`ACE ${require("atlassian-connect-express/package.json").version} peer listening on ${port}`);
  });
}

start().catch(err => {
  console.error("start:", err);
  process.exit(1);
});
