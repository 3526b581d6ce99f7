-- A pipeline's own variables (JSON object: name -> value).
ALTER TABLE pipelines ADD COLUMN variables TEXT NOT NULL DEFAULT '{}';
