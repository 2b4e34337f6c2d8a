-- wrk script: GET the notes of PROJ-1, each request as the next tenant of the tokens file.
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
  return wrk.format("GET", "/api/issues/PROJ-1/notes", { ["Authorization"] = "JWT " .. tokens[next_token] })
end
