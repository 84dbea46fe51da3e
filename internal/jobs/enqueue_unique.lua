-- enqueue_unique.lua adds a job unless its idempotency marker exists.
--
-- KEYS[1] idempotency marker (keys.Unique)
-- KEYS[2] stream (jobs.Stream)
-- ARGV[1] marker TTL in ms
-- ARGV[2] payload
--
-- Returns {1, new job id} when the job was added, {0, first job id} when
-- the marker already existed.
local old = redis.call('GET', KEYS[1])
if old then return {0, old} end
local id = jobs_add(KEYS[2], ARGV[2])
redis.call('SET', KEYS[1], id, 'PX', ARGV[1])
return {1, id}
