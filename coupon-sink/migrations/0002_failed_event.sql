-- Events that could not be written: kept with their raw payload and position, so that an
-- operator can fix the cause and replay them (`coupon-sink replay`). A redelivered failure of
-- the same position counts another attempt instead of adding a row.
CREATE TABLE IF NOT EXISTS failed_event (
    id              BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    payload         MEDIUMBLOB      NOT NULL,
    topic           VARCHAR(249)    NOT NULL,
    kafka_partition INT             NOT NULL,
    kafka_offset    BIGINT          NOT NULL,
    error           TEXT            NOT NULL,
    first_seen_at   DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    last_seen_at    DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    attempts        INT UNSIGNED    NOT NULL DEFAULT 1,
    resolved_at     DATETIME(3)     NULL,
    UNIQUE KEY uq_failed_event_position (topic, kafka_partition, kafka_offset),
    KEY ix_failed_event_unresolved (resolved_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
