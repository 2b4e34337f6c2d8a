-- wrk script: GET the notes of PROJ-1, each request as the next tenant of the tokens file.
--   wrk … -s bench/notes.lua URL -- TOKENS [HEADER PREFIX PATH]
-- By default a Connect JWT (`Authorization: JWT <token>`) on /api/issues/PROJ-1/notes;
-- bench/container.sh passes a Forge Invocation Token (`Authorization`, `Bearer `) or the
-- sidecar's invocation id (`x-forge-invocation-id`, no prefix) on /forge/api/issues/PROJ-1/notes.
local tokens = {}
local next_token = 0
local header, prefix, path = "Authorization", "JWT ", "/api/issues/PROJ-1/notes"

function init(args)
  for line in io.lines(args[1]) do
    tokens[#tokens + 1] = line
  end
  header = args[2] or header
  prefix = args[3] or prefix
  path = args[4] or path
  next_token = math.random(#tokens)
end

function request()
  next_token = next_token % #tokens + 1
  return wrk.format("GET", path, { [header] = prefix .. tokens[next_token] })
end
