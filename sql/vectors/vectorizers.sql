-- 0.3.0: fitted vectorizers (counts, tfidf): a vocabulary of lexemes, fitted on a
-- column or on a model's training rows, stored and versioned. A name's newest
-- version is what embed(name, ...) uses; a model keeps the id of the version it
-- was trained with, so refitting a name never changes a deployed model.
CREATE TABLE ml_stack.vectorizers (
    id            bigserial PRIMARY KEY,
    name          text NOT NULL CHECK (name <> ''),
    version       integer NOT NULL CHECK (version > 0),
    method        text NOT NULL CHECK (method IN ('counts', 'tfidf')),
    config        text NOT NULL,                  -- the text search configuration of to_tsvector
    options       jsonb NOT NULL DEFAULT '{}',    -- the fit options as given, defaults filled in
    dims          integer NOT NULL CHECK (dims > 0),
    documents     bigint NOT NULL,                -- rows it was fitted on (NULL texts not counted)
    fitted_on     jsonb NOT NULL,                 -- {"relation": .., "column": ..} or {"model_training": ..}
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (name, version)
);
COMMENT ON TABLE ml_stack.vectorizers IS
    'ml_stack: fitted text vectorizers (counts, tfidf): one row per version of a name; the newest version serves embed(name, ...).';

-- The vocabulary: term -> position (1-based, terms in byte order as scikit-learn
-- sorts them), document frequency and inverse document frequency.
CREATE TABLE ml_stack.vectorizer_terms (
    vectorizer_id bigint NOT NULL REFERENCES ml_stack.vectorizers (id) ON DELETE CASCADE,
    term          text COLLATE "C" NOT NULL,
    idx           integer NOT NULL,
    df            bigint NOT NULL,
    idf           float8 NOT NULL,
    PRIMARY KEY (vectorizer_id, term),
    UNIQUE (vectorizer_id, idx)
);
COMMENT ON TABLE ml_stack.vectorizer_terms IS
    'ml_stack: the vocabulary of each fitted vectorizer (term, its position in the vector, document frequency, idf).';

SELECT pg_catalog.pg_extension_config_dump('ml_stack.vectorizers', '');
SELECT pg_catalog.pg_extension_config_dump('ml_stack.vectorizers_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('ml_stack.vectorizer_terms', '');
