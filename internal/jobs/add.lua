-- add.lua is the fragment through which other packages' scripts add a job
-- to a queue partition's stream (jobs.LuaAdd). jobs owns the stream entry
-- format: a script that includes this fragment never writes an entry's
-- fields itself. Name the stream with jobs.Stream and pass it in KEYS.
--
-- jobs_add(stream, payload)
--   stream   the partition's stream key (jobs.Stream(queue, p))
--   payload  the job payload, as the queue's handler decodes it
--   returns  the new entry id
local function jobs_add(stream, payload)
  return redis.call('XADD', stream, '*', 'p', payload)
end
