-- wrk script: GET the notes of PROJ-1 as Forge invokes a remote, each request with the next
-- installation's invocation token (one a line of the tokens file).
local tokens = {}
local next_token = 0

function init(args)
  for line in io.lines(args[1]) do
    tokens[#tokens + 1] = line
  end
  next_token = math.random(#tokens)
end

function request()
  next_token = next_token % #tokens + 1
  return wrk.format("GET", "/forge/api/issues/PROJ-1/notes", { ["Authorization"] = "Bearer " .. tokens[next_token] })
end
