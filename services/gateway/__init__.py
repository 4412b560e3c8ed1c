"""The gateway: the one HTTP door for clinic systems (FHIR R4 REST and native JSON in) with sign-in and roles."""
