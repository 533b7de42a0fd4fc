-- Appends one event to a job's replay stream, keeps the stream expiring, and publishes the
-- event live, as ONE command: a busy stream costs one round trip and one command per event,
-- and the stream never exists without its expiry.
-- KEYS[1] the replay stream, KEYS[2] the live channel
-- ARGV[1] the event's JSON, ARGV[2] the approximate cap on entries, ARGV[3] the expiry in ms
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'data', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PUBLISH', KEYS[2], ARGV[1])
return 1
