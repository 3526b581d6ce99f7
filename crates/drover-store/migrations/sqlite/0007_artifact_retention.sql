-- Deletion and retention ask which deployments use a version.
CREATE INDEX deployments_application_version ON deployments (application, version);
